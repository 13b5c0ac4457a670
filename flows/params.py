"""One parameter model per flow: every field described and titled in words, safe defaults, so
the UI form is clear.

Secrets are never parameters: they come from Prefect Secret blocks or the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pe_dr.figures import REGISTRY, Registry
from pe_dr.lab.spec import LabSpec, load_spec

LabField = Annotated[
    LabSpec | None,
    Field(
        title="Lab",
        description="The lab to work on; empty means the lab spec file named by PE_DR_LAB_SPEC "
        "in the environment of the process that runs the flow (or the tutorial's lab).",
    ),
]
POLL_MIN_SECONDS, POLL_MAX_SECONDS = 0.1, 60.0
PollField = Annotated[
    float,
    Field(
        ge=POLL_MIN_SECONDS,
        le=POLL_MAX_SECONDS,
        allow_inf_nan=False,
        title="Poll interval (s)",
        description="Seconds between two looks at the lab while waiting.",
    ),
]


def _vm_choices(schema: dict[str, Any]) -> None:
    """The form offers the VMs of the lab spec in use where the schema is made (`pe-dr serve`,
    `prefect deploy`: PE_DR_LAB_SPEC, else the tutorial's lab) as a multi-select. The model
    itself takes any name: pre-flight refuses one the run's lab lacks, in one sentence."""
    schema["items"] = {"type": "string", "enum": [h.name for h in load_spec().hosts]}
    schema["uniqueItems"] = True


ConfirmField = Annotated[
    list[str],
    Field(
        title="VMs it may halt or destroy",
        description="Pick the VMs this run may halt or destroy (e.g. the primary). Empty: "
        "nothing destructive happens and a step that needs it refuses.",
        json_schema_extra=_vm_choices,
    ),
]
ApprovalField = Annotated[
    Literal["none", "ask"],
    Field(
        title="Approval",
        description="ask: just before it halts or destroys anything, the run pauses until "
        "someone approves or rejects it in the Prefect UI (Resume on the flow run), with a "
        "reason for the journal; rejected or unanswered, nothing is halted and the run ends "
        "Cancelled. Needs a run from a deployment. none: no question (`confirm` is the consent).",
    ),
]
ApprovalTimeoutField = Annotated[
    int,
    Field(
        ge=1,
        le=7 * 24 * 3600,
        title="Approval timeout (s)",
        description="How long a run that asks waits for an answer; then it ends Cancelled, "
        "nothing halted (it holds the lab meanwhile).",
    ),
]


def budgets_model(registry: Registry) -> type[BaseModel]:
    """The Budgets form of a registry of figures: a field per figure, its default, title,
    description and bounds from the registry (pe_dr/figures.py)."""
    fields: dict[str, Any] = {
        f.key: (
            float,
            Field(f.default, gt=f.above, le=f.at_most, title=f.title, description=f.description),
        )
        for f in registry.budgets
    }
    return create_model(
        "Budgets",
        __config__=ConfigDict(frozen=True, extra="forbid", title="Budgets", allow_inf_nan=False),
        __doc__="Longest acceptable times; exceeding one fails its check.",
        __module__=__name__,
        **fields,
    )


# Built from the registry when imported; to mypy, a model whose every field is a float.
if TYPE_CHECKING:

    class Budgets(BaseModel):
        """Longest acceptable times; exceeding one fails its check."""

        def __init__(self, **seconds: float) -> None: ...
        def __getattr__(self, key: str) -> float: ...

else:
    Budgets = budgets_model(REGISTRY)


BudgetsField = Annotated[
    Budgets,
    Field(
        title="Budgets",
        description="Longest acceptable times (seconds); exceeding one fails its check.",
    ),
]


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lab: LabField = None


class LabSetupParameters(_Base):
    """Bring the lab's VMs up in dependency order."""

    model_config = ConfigDict(title="Lab set-up")


class CodeManagerParameters(_Base):
    """Configure Code Manager against the GitLab control repo (tutorial step 1)."""

    model_config = ConfigDict(title="Code Manager set-up")


class ReplicaActivationParameters(_Base):
    """Provision and enable the replica, copy the secret keys, push agent configuration."""

    model_config = ConfigDict(title="Replica activation")

    poll_interval_seconds: PollField = 2.0


class ReplicationCheckParameters(_Base):
    """Prove that a commit to the control repo reaches the replica, and measure the lag."""

    model_config = ConfigDict(title="Replication check")

    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class FailoverParameters(_Base):
    """Halt the primary, prove agents fail over to the replica, start it, prove they fail back."""

    model_config = ConfigDict(title="Failover drill")

    confirm: ConfirmField = []
    approval: ApprovalField = "none"
    approval_timeout_seconds: ApprovalTimeoutField = 3600
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class PromotionParameters(_Base):
    """Destroy the primary and promote the replica to be the new primary (irreversible)."""

    model_config = ConfigDict(title="Promotion")

    confirm: ConfirmField = []
    approval: ApprovalField = "none"
    approval_timeout_seconds: ApprovalTimeoutField = 3600
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class ReprotectParameters(_Base):
    """After a promotion: the lost primary's VM comes back as the new primary's replica."""

    model_config = ConfigDict(title="Reprotect")

    confirm: ConfirmField = []
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0


class TeardownParameters(_Base):
    """Destroy every VM of the lab named in `confirm`."""

    model_config = ConfigDict(title="Teardown")

    confirm: ConfirmField = []
    approval: ApprovalField = "none"
    approval_timeout_seconds: ApprovalTimeoutField = 3600


class DrillParameters(_Base):
    """The DR drill: set-up checks, health, replication, failover and failback, optional
    promotion."""

    model_config = ConfigDict(title="DR drill")

    confirm: ConfirmField = []
    promote: Annotated[
        bool,
        Field(
            title="Promote the replica",
            description="Also destroy the primary and promote the replica (needs the primary "
            "in `confirm`), then reprotect the lab (unless `reprotect` is off).",
        ),
    ] = False
    reprotect: Annotated[
        bool,
        Field(
            title="Reprotect after promoting",
            description="After a promotion, rebuild the lost VM as the new primary's replica so "
            "the lab is a protected pair again (about an hour on a real lab). Off: the lab is "
            "left promoted, and drills refuse it until reprotect runs.",
        ),
    ] = True
    approval: ApprovalField = "none"
    approval_timeout_seconds: ApprovalTimeoutField = 3600
    budgets: BudgetsField = Budgets()
    poll_interval_seconds: PollField = 2.0
    report_dir: Annotated[
        str,
        Field(
            title="Report folder",
            description="Folder for the JSON journal (drill-YYYYMMDDTHHMMSSZ.json).",
        ),
    ] = "reports"
