"""One parameter model per flow: every field described, safe defaults, so the UI form is clear.

Secrets are never parameters: they come from Prefect Secret blocks or the environment.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from pe_dr.lab.spec import LabSpec

LabField = Annotated[
    LabSpec | None,
    Field(
        description="The lab to work on; empty means the lab spec file named by PE_DR_LAB_SPEC "
        "in the environment of the process that runs the flow (or the tutorial's lab).",
    ),
]
PollField = Annotated[
    float,
    Field(gt=0, le=60, description="Seconds between two looks at the lab while waiting."),
]
ConfirmField = Annotated[
    list[str],
    Field(
        description="VMs this run may halt or destroy (e.g. primary.vm). Empty: nothing "
        "destructive happens and a step that needs it refuses.",
    ),
]


class Budgets(BaseModel):
    """Longest acceptable times; exceeding one fails its check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rto_seconds: Annotated[
        float,
        Field(gt=0, description="Primary down → first agent run served by the replica."),
    ] = 900.0
    replication_lag_seconds: Annotated[
        float, Field(gt=0, description="Push to the control repo → change live on the replica.")
    ] = 300.0
    failback_seconds: Annotated[
        float, Field(gt=0, description="Primary back → first agent run served by it again.")
    ] = 900.0
    rpo_seconds: Annotated[
        float,
        Field(
            gt=0,
            description="Worst store: a write on the primary → served by the replica (what a "
            "lost primary would lose).",
        ),
    ] = 300.0
    promotion_seconds: Annotated[
        float, Field(gt=0, description="After promotion → every agent compiles from the replica.")
    ] = 1800.0


BudgetsField = Annotated[
    Budgets,
    Field(description="Longest acceptable times (seconds); exceeding one fails its check."),
]


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lab: LabField = None


class LabSetupParameters(_Base):
    """Bring the lab's VMs up in dependency order."""


class CodeManagerParameters(_Base):
    """Configure Code Manager against the GitLab control repo (tutorial step 1)."""


class ReplicaActivationParameters(_Base):
    """Provision and enable the replica, copy the secret keys, push agent configuration."""

    poll_interval_seconds: PollField = 2.0


class ReplicationCheckParameters(_Base):
    """Prove that a commit to the control repo reaches the replica, and measure the lag."""

    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class FailoverParameters(_Base):
    """Halt the primary, prove agents fail over to the replica, start it, prove they fail back."""

    confirm: ConfirmField = []
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class PromotionParameters(_Base):
    """Destroy the primary and promote the replica to be the new primary (irreversible)."""

    confirm: ConfirmField = []
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class TeardownParameters(_Base):
    """Destroy every VM of the lab named in `confirm`."""

    confirm: ConfirmField = []


class DrillParameters(_Base):
    """The monthly DR drill: set-up checks, health, replication, failover, optional promotion."""

    confirm: ConfirmField = []
    promote: Annotated[
        bool,
        Field(
            description="Also destroy the primary and promote the replica (needs the primary "
            "in `confirm`). Leaves the lab promoted."
        ),
    ] = False
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0
    report_dir: Annotated[
        str, Field(description="Folder for the JSON journal (drill-YYYYMMDDTHHMMSSZ.json).")
    ] = "reports"
