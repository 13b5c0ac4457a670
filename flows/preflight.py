"""Pre-flight as every root flow run's first step (also for runs started from the Prefect UI,
which have no command line): pe_dr.preflight's checks, the lab lock, and the refusal to re-run a
run that already passed. `pe-dr drill` runs the local part of the same checks before Prefect
starts, so a bad command line fails in under a second.
"""

from __future__ import annotations

from prefect.runtime import flow_run

from flows import kill_switch
from flows.lab_lock import lock_outlook
from pe_dr import preflight as core
from pe_dr.lab.spec import LabSpec
from pe_dr.preflight import Needs, Outcome, PreflightFailed, needs_for
from tasks.common import lab_task

__all__ = ["Needs", "PreflightFailed", "check", "needs_for", "preflight", "refuse_passed_retry"]


def check(spec: LabSpec, needs: Needs) -> Outcome:
    """Every pre-flight check, the lab's included; raises nothing."""
    outcome = core.local(spec, needs)
    if not outcome.problems:  # a lab we may not drill is not worth reading
        outcome.extend(core.on_the_lab(spec, needs))
    outcome.extend(lock_outlook(spec))
    if needs.flow == "canary-drill":
        stop = kill_switch.engaged()
        if stop:
            outcome.problems.append(f"{stop}: no canary drill starts until `pe-dr kill-switch off`")
    return outcome


@lab_task(timeout=120, retries=0, cache=False)
def preflight(lab: LabSpec, needs: Needs) -> list[str]:
    """Never cached: a Retry checks again (the password may have been fixed meanwhile)."""
    refuse_passed_retry(needs.flow)
    outcome = check(lab, needs)
    if outcome.problems:
        raise PreflightFailed(outcome.problems)
    return outcome.notes


def refuse_passed_retry(flow_name: str) -> None:
    """A Retry of a run that passed would only replay cached steps and measure nothing."""
    if (flow_run.run_count or 1) <= 1:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run.id)
    finals = [s for s in states if s.is_final()]
    if finals and finals[-1].is_completed():
        raise PreflightFailed(
            [
                f"flow run {flow_run.id} of {flow_name} already passed: a Retry would only "
                "replay its cached steps and measure nothing; start a new run instead"
            ]
        )
