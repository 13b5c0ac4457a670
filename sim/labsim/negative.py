"""`dr-drill/negative`: proof that the drill can still fail, as canary flows do.

It drills a labsim lab with one named fault in place and passes only when the drill fails at the
check meant to catch that fault; a drill that passes, or fails somewhere else, fails it. It runs
on a lab that is already built: the fault goes in through labsim's control socket once the drill
holds the lab (after its pre-flight), and comes out again however the drill ends.

It lives in labsim, not in the product (which never imports labsim), and is served by
`labsim serve-negative`, beside `pe-dr serve`, which does not need labsim. Its flow is named
`dr-drill`, so its deployment reads `dr-drill/negative`, tagged `expected:failure`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.common import note, resolve_lab, run_chapter
from flows.dr_drill import drill_every_chapter
from flows.params import (
    Budgets,
    BudgetsField,
    ConfirmField,
    DrillParameters,
    LabField,
    PollField,
)
from labsim import control
from pe_dr.errors import CheckFailed, ConfigError
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.report import DrillReport
from pe_dr.steps import vms

# The fault -> the drill's check meant to catch it (check names of pe_dr/checks/; what
# each fault does, and its source, is in labsim/faults.py).
EXPECTED_CHECK: dict[str, str] = {
    "failover:broken": "failover_ready",  # server_list without the replica, before the halt
    "replication:broken": "replication",
    "replica:unhealthy": "health",
    "replica:db-replication-inactive": "health",
    "halt:ignored": "primary_down",  # on the lab's primary: halted, and it still serves
}
Fault = Literal[
    "failover:broken",
    "replication:broken",
    "replica:unhealthy",
    "replica:db-replication-inactive",
    "halt:ignored",
]


class NegativeParameters(BaseModel):
    """The drill with one fault in the lab: passes only when it fails at the check meant to
    catch that fault."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Negative DR drill")

    lab: LabField = None
    fault: Annotated[
        Fault,
        Field(
            title="Fault",
            description="The labsim fault added for this drill (halt:ignored: on the primary).",
        ),
    ] = "failover:broken"
    confirm: ConfirmField = []
    budgets: BudgetsField = Budgets(replication_lag_seconds=30.0)
    poll_interval_seconds: PollField = 0.5
    report_dir: Annotated[
        str, Field(title="Report folder", description="Folder for the drill's JSON journal.")
    ] = "reports"


class DrillCannotFail(CheckFailed):
    """The drill did not fail where the fault should have made it fail."""


def fault_spec(fault: str, spec: LabSpec) -> str:
    return f"{fault}={spec.primary.name}" if fault == "halt:ignored" else fault


def judge(record: DrillReport | None, fault: str) -> str:
    """The negative drill's verdict on the drill's record: a sentence when the drill failed at
    the check meant to catch `fault`; raises DrillCannotFail otherwise."""
    expected = EXPECTED_CHECK[fault]
    if record is None:
        raise DrillCannotFail(f"the drill with {fault} left no record: it proved nothing")
    if record.status == "passed":
        raise DrillCannotFail(
            f"the drill passed with {fault} in the lab: its {expected} check did not catch it"
        )
    if record.status != "failed":
        why = record.cancelled or record.interrupted or record.status
        raise DrillCannotFail(f"the drill with {fault} did not run to a verdict ({why})")
    failed = [c for c in record.checks if not c["passed"]]
    if failed and failed[0]["name"] == expected:
        detail = failed[0]["detail"]
        return f"the drill failed at its {expected} check, as {fault} should make it: {detail}"
    failure = record.failure() or {}
    where = f"its {failed[0]['name']} check" if failed else f"step {failure.get('step')}"
    raise DrillCannotFail(
        f"the drill with {fault} failed at {where}, not at its {expected} check: "
        f"{failure.get('detail') or record.error}"
    )


def state_dir_of(spec: LabSpec) -> Path:
    """The labsim lab behind `spec` (its daemon writes the spec with vagrant_root = its state)."""
    state = Path(spec.vagrant_root or ".")
    if not (state / "control.sock").exists():
        raise ConfigError(
            f"lab {spec.name} is not a running labsim lab (no control socket in {state}): the "
            "negative drill runs only against labsim"
        )
    return state


def agents_apply_their_classification(spec: LabSpec) -> None:
    """A Puppet run on every agent, as its next scheduled one (PE's runinterval, 30 min by
    default) would be: an agent takes a classification change, such as failover:broken's
    server_list, only from a run that applies its catalog (PE docs, "Configure agents to fail
    over"), and the drill's own agent runs are --noop."""
    with Lab(spec) as lab:
        for agent in spec.agents:
            vms.run_puppet(lab, agent.name)


# faults a built lab's agents only see after their next Puppet run (see the function above)
NEEDS_AGENT_RUN = {"failover:broken"}


@contextlib.contextmanager
def fault_in_place(state: Path, fault: str, spec: LabSpec | None = None) -> Iterator[None]:
    """`fault` in the lab for the block; the lab must have no other fault (clearing it after
    would take those away too)."""
    present = [f["spec"] for f in control.call(state, {"cmd": "fault_list"})["faults"]]
    if present:
        raise ConfigError(
            f"the lab already has faults ({', '.join(present)}): the negative drill adds its "
            "own to a healthy lab (labsim fault clear)"
        )
    answer = control.call(state, {"cmd": "fault_add", "spec": fault})
    if "error" in answer:
        raise ConfigError(str(answer["error"]))
    note(f"negative drill: fault {fault} added to the lab")
    try:
        if spec is not None and fault in NEEDS_AGENT_RUN:
            agents_apply_their_classification(spec)
            note("negative drill: the agents ran Puppet, as their next scheduled run would")
        yield
    finally:
        control.call(state, {"cmd": "fault_clear"})
        note(f"negative drill: fault {fault} cleared")
        if spec is not None and fault in NEEDS_AGENT_RUN:  # their configuration whole again
            try:
                agents_apply_their_classification(spec)
            except Exception as exc:  # the drill's outcome is the story; say what is left
                note(f"negative drill: the agents could not run Puppet again ({exc}): run it")


def drill_with_fault(spec: LabSpec, fault: str, drill: DrillParameters) -> Callable[[], None]:
    state = state_dir_of(spec)

    def body() -> None:
        with fault_in_place(state, fault, spec):
            drill_every_chapter(spec, drill)

    return body


@flow(name="dr-drill", persist_result=True, log_prints=True)
def negative_drill(parameters: NegativeParameters = NegativeParameters()) -> Any:  # noqa: B008
    """The DR drill with a labsim fault in place: passes only when the drill fails at the check
    meant to catch the fault, so a server proves that the drill can still fail."""
    spec = resolve_lab(parameters.lab)
    fault = fault_spec(parameters.fault, spec)
    drill = DrillParameters(
        lab=spec,
        confirm=parameters.confirm,
        budgets=parameters.budgets,
        poll_interval_seconds=parameters.poll_interval_seconds,
        report_dir=parameters.report_dir,
    )
    state_dir_of(spec)  # before the drill's pre-flight: a lab that is not labsim is refused
    try:
        record = run_chapter(
            "dr-drill",
            spec,
            lambda s: drill_with_fault(s, fault, drill)(),
            report_dir=parameters.report_dir,
            confirm=parameters.confirm,
        )
    except ConfigError:
        raise  # the negative drill could not be set up: no verdict
    except Exception as exc:  # the drill failed, as it should (its record says where)
        record = getattr(exc, "record", None)
    verdict = judge(record if isinstance(record, DrillReport) else None, parameters.fault)
    with contextlib.suppress(Exception):
        create_markdown_artifact(
            key="dr-drill-negative",
            markdown=f"# Negative DR drill PASSED\n\n{verdict}.",
            description=f"fault {fault}",
        )
    print(f"negative drill passed: {verdict}")
    return {"fault": fault, "expected_check": EXPECTED_CHECK[parameters.fault], "verdict": verdict}


def deployment(spec: LabSpec | None = None) -> Any:
    """`dr-drill/negative`, scheduled as the monthly drill is (PE_DR_DRILL_CRON), on the lab
    spec in use (PE_DR_LAB_SPEC: labsim up's)."""
    from prefect.schedules import Cron

    from deployments.catalog import find
    from pe_dr.lab.spec import load_spec

    spec = spec or load_spec()
    monthly = find("dr-drill/monthly", spec)
    return negative_drill.to_deployment(
        name="negative",
        description=(
            "The DR drill against labsim with a named fault: passes only when the drill fails "
            "at the check meant to catch it (proof that the drill can still fail)."
        ),
        tags=[
            "pe-dr",
            "labsim",
            "scheduled:monthly",
            "expected:failure",
            "destructive:halt-primary",
        ],
        parameters={"parameters": {"fault": "failover:broken", "confirm": [spec.primary.name]}},
        schedules=[Cron(monthly.cron or "0 3 1 * *", timezone=monthly.timezone)],
    )
