"""Every Prefect deployment of pe-dr-drill, defined once: `pe-dr serve` and prefect.yaml read it.

`dr-drill/monthly` runs the drill on a schedule (cron `PE_DR_DRILL_CRON`, default the 1st of each
month at 03:00, in `PE_DR_DRILL_TIMEZONE`, default UTC); it may halt the primary but never destroys
anything. Each flow also has a deployment to run by hand from the UI, named for what it does
(`dr-drill/on-demand`, `failover-drill/halt-primary`, ...). Tags say what each deployment expects
and what it may do to the lab, as canary-flows does.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import yaml

from pe_dr.errors import ConfigError
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr.settings import env_name, settings

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

CRON_ENV, TIMEZONE_ENV = env_name("drill_cron"), env_name("drill_timezone")
WORK_POOL_ENV, HOME_ENV = env_name("work_pool"), env_name("home")

BASE_TAGS = ("pe-dr",)


@dataclass(frozen=True)
class DeploymentDef:
    """One deployment: which flow, its name, what it expects, its defaults and schedule."""

    entrypoint: str  # path/to/file.py:function, relative to the repository
    flow_name: str
    name: str
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    def load_flow(self) -> Flow[..., Any]:
        path, function = self.entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow: Flow[..., Any] = getattr(module, function)
        return flow

    def to_deployment(self) -> RunnerDeployment:
        """The deployment `prefect.serve` runs (its parameter schema is the UI form)."""
        from prefect.schedules import Cron

        schedules = [Cron(self.cron, timezone=self.timezone)] if self.cron else None
        deployment = self.load_flow().to_deployment(
            name=self.name,
            description=self.description,
            tags=list(self.tags),
            parameters=self.parameters,
            schedules=schedules,
        )
        return cast("RunnerDeployment", deployment)  # sync call: not a coroutine


def schedule() -> tuple[str, str]:
    """The monthly drill's cron and time zone, checked (ConfigError naming the variables)."""
    current = settings()
    cron, timezone = current.drill_cron.strip(), current.drill_timezone.strip()
    if len(cron.split()) != 5:  # croniter takes a sixth field, seconds: every second of a minute
        raise ConfigError(
            f"the drill schedule {CRON_ENV}={cron!r}: a cron needs exactly five fields "
            "(minute hour day-of-month month day-of-week)"
        )
    # after the shape check: importing Prefect's schedules takes seconds, a refusal must not
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"the drill schedule {CRON_ENV}={cron!r} {TIMEZONE_ENV}={timezone!r}: {problem}"
        ) from None
    return cron, timezone


def catalog(spec: LabSpec | None = None) -> list[DeploymentDef]:
    """All deployments. `spec` (default: the lab spec from PE_DR_LAB_SPEC, else the tutorial's
    lab) only names the PE servers the monthly drill is allowed to halt: both, since a promotion
    swaps which one is the primary, and the drill halts whichever is now."""
    lab = spec or load_spec()
    servers = [lab.primary.name, lab.replica.name]
    cron, timezone = schedule()

    def manual(
        entrypoint: str, flow_name: str, name: str, description: str, *tags: str
    ) -> DeploymentDef:
        # A run by hand that halts or destroys asks for approval in the UI first, unless the
        # form says otherwise (approval: none).
        destructive = any(t.startswith("destructive:") for t in tags)
        return DeploymentDef(
            entrypoint=entrypoint,
            flow_name=flow_name,
            name=name,
            description=description,
            tags=(*BASE_TAGS, "manual", "expected:success", *tags),
            parameters={"parameters": {"approval": "ask"}} if destructive else {},
        )

    return [
        DeploymentDef(
            entrypoint="flows/dr_drill.py:dr_drill",
            flow_name="dr-drill",
            name="monthly",
            description=(
                "The monthly DR drill: ensure the lab is built, gate on health, prove "
                "replication, halt the primary to prove failover and failback, write the "
                "journal. Never promotes or destroys anything."
            ),
            tags=(
                *BASE_TAGS,
                "scheduled:monthly",
                "expected:success",
                "destructive:halt-primary",
            ),
            # no human: its consent is the preset `confirm`
            parameters={"parameters": {"confirm": servers, "promote": False, "approval": "none"}},
            cron=cron,
            timezone=timezone,
        ),
        manual(
            "flows/dr_drill.py:dr_drill",
            "dr-drill",
            "on-demand",
            "The DR drill, run by hand: ensure the lab is built, gate on health, prove "
            "replication, failover and failback. Pick the primary in `confirm` to let it halt "
            "the primary; `promote` also destroys it and promotes the replica. Asks for approval "
            "in the UI just before the halt (approval: none to skip).",
            "destructive:halt-primary",
            "needs:confirm",
        ),
        manual(
            "flows/lab_setup.py:lab_setup",
            "lab-setup",
            "bring-up",
            "Bring the lab's VMs up in dependency order (builds them on a fresh lab).",
            "creates:vms",
        ),
        manual(
            "flows/code_manager_setup.py:code_manager_setup",
            "code-manager-setup",
            "configure",
            "Configure Code Manager against the GitLab control repo. Needs the lab up.",
            "needs:lab-up",
        ),
        manual(
            "flows/replica_activation.py:replica_activation",
            "replica-activation",
            "enable-replica",
            "Provision and enable the replica, copy the secret keys, push agent configuration. "
            "Needs Code Manager configured.",
            "needs:code-manager",
        ),
        manual(
            "flows/replication_check.py:replication_check",
            "replication-check",
            "measure-lag",
            "Prove that a commit to the control repo reaches the replica; measure the lag. "
            "Needs the replica enabled.",
            "needs:replica-enabled",
        ),
        manual(
            "flows/failover_drill.py:failover_drill",
            "failover-drill",
            "halt-primary",
            "Halt the primary, prove agents fail over to the replica, start it, prove they fail "
            "back. Pick the primary in `confirm`; asks for approval in the UI just before the "
            "halt.",
            "needs:replica-enabled",
            "destructive:halt-primary",
            "needs:confirm",
        ),
        manual(
            "flows/promotion.py:promotion",
            "promotion",
            "promote-replica",
            "Destroy the primary and promote the replica (irreversible). Pick the primary in "
            "`confirm`; asks for approval in the UI just before the destroy.",
            "needs:replica-enabled",
            "destructive:destroys-vms",
            "needs:confirm",
        ),
        manual(
            "flows/reprotect.py:reprotect",
            "reprotect",
            "rebuild-replica",
            "After a promotion: rebuild the lost primary's VM as the new primary's replica, so "
            "the lab is a protected pair again and the next drill runs on it. Pick that VM in "
            "`confirm` if it still holds the old primary's installation (it is destroyed first).",
            "needs:promoted",
            "creates:vms",
        ),
        manual(
            "flows/teardown.py:teardown",
            "teardown",
            "destroy-vms",
            "Destroy every VM of the lab picked in `confirm` (irreversible); asks for approval in "
            "the UI first.",
            "destructive:destroys-vms",
            "needs:confirm",
        ),
    ]


def find(full_name: str, spec: LabSpec | None = None) -> DeploymentDef:
    for d in catalog(spec):
        if d.full_name == full_name:
            return d
    raise ConfigError(f"no deployment {full_name!r} in the catalog")


YAML_HEADER = """\
# GENERATED by `pe-dr deployments yaml > prefect.yaml` from deployments/catalog.py: edit the
# catalog, not this file (a test fails when they differ).
#
#   export PE_DR_HOME=/path/to/pe-dr-drill     # where workers find this repository (and .venv)
#   prefect work-pool create --type process pe-dr-lab
#   prefect --no-prompt deploy --all
#   PE_DR_HOME=... prefect worker start --pool pe-dr-lab
"""


# What the process worker runs for a flow run: Prefect's engine behind
# deployments.flow_process, so that a stopped worker does not SIGKILL the flow run before it
# could clean up. The venv of the checkout at $PE_DR_HOME (or $PE_DR_PYTHON), resolved on the
# worker when the run starts.
FLOW_PROCESS_COMMAND = (
    "sh -c 'exec \"${PE_DR_PYTHON:-$" + HOME_ENV + '/.venv/bin/python}" '
    "-m deployments.flow_process'"
)


def prefect_yaml(work_pool: str | None = None, lab_spec_path: str | None = None) -> str:
    """prefect.yaml for `prefect deploy --all` to a process work pool."""
    pool = work_pool or settings().work_pool.strip()
    job_variables: dict[str, Any] = {"command": FLOW_PROCESS_COMMAND}
    if lab_spec_path:
        job_variables["env"] = {"PE_DR_LAB_SPEC": lab_spec_path}
    deployments = []
    for d in catalog(load_spec(lab_spec_path) if lab_spec_path else None):
        entry: dict[str, Any] = {
            "name": d.name,
            "entrypoint": d.entrypoint,
            "description": d.description,
            "tags": list(d.tags),
            "parameters": d.parameters,
            "work_pool": {"name": pool, "job_variables": copy.deepcopy(job_variables)},
        }
        if d.cron:
            entry["schedules"] = [{"cron": d.cron, "timezone": d.timezone, "active": True}]
        deployments.append(entry)
    document = {
        "name": "pe-dr-drill",
        "prefect-version": "3.9.1",
        "build": None,
        "push": None,
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $" + HOME_ENV + " }}"
                }
            }
        ],
        "deployments": deployments,
    }
    body = yaml.safe_dump(document, sort_keys=False, width=100, default_flow_style=False)
    return YAML_HEADER + "\n" + body
