"""The failover drill (the tutorial's step 4): halt the primary, prove agents fail over to the
replica and what the replica serves; start the primary, prove they fail back."""

from __future__ import annotations

import sys

from prefect.transactions import transaction

from flows.approval import Ask
from flows.common import chapter, note
from flows.params import FailoverParameters
from flows.replication_check import root_run_id
from pe_dr import interrupts
from pe_dr.lab.spec import LabSpec
from pe_dr.secrets import scrub
from pe_dr.steps import vms as vms_steps
from tasks import checks, markers, vms
from tasks.common import named
from tasks.lab import require_lab_state, restore_primary


def restore_primary_first(spec: LabSpec) -> None:
    """The lab is whole before anything else: a primary a crash left halted is started."""
    outcome = restore_primary(spec)
    if outcome:  # None: the primary was not halted
        note(str(outcome))


def remove_the_markers(spec: LabSpec) -> None:
    """Clean-up on success and failure (under a stop signal it is left to the next attempt, whose
    write-markers removes what this one left). Never raises: what stopped the drill is the story."""
    if interrupts.current() is not None:
        note("the failover drill was stopped: its markers are removed by the next drill or Retry")
        return
    try:
        removed = markers.remove_markers(spec)
    except Exception as exc:
        note(f"removing the failover drill's markers failed: {exc} (the next drill removes them)")
        return
    if removed:
        note("removed the failover drill's markers: " + ", ".join(removed))


def bring_primary_back(spec: LabSpec) -> None:
    """The failover transaction's rollback: the task that starts the primary again, whatever
    stopped the drill. Under a stop signal it runs while the interrupt unwinds, once (no back-off:
    `pe-dr drill` gives it a bounded time), and pe_dr.interrupts keeps a second signal from
    cutting it short. It never raises: what stopped the drill is the story."""
    primary = spec.primary.name
    stop = interrupts.current()
    unwinding = sys.exc_info()[1]  # the rollback runs while what stopped the drill unwinds
    signum = interrupts.signal_of(unwinding) if unwinding is not None else None
    if stop is None and signum is not None:  # a SIGTERM Prefect turned into TerminationSignal
        stop = interrupts.begin(signum)
    why = f"was stopped by {stop.name}" if stop else "failed"
    start = vms.start_primary_again.with_options(retries=0) if stop else vms.start_primary_again
    with interrupts.shielded():
        try:
            outcome = start(spec)
        except BaseException as exc:
            note(
                f"the failover drill {why} while {primary} was down, and starting it again "
                f"failed: {type(exc).__name__}: {scrub(str(exc))} (the next drill or Retry starts "
                "it first)"
            )
            return
    if outcome == "already running":
        note(f"the failover drill {why}; {primary} was running, nothing to start")
    else:
        note(f"the failover drill {why} while {primary} was down; started it again")


@chapter()
def failover_drill(spec: LabSpec, parameters: FailoverParameters) -> dict[str, object]:
    """Halt the primary, prove agents fail over to the replica; start it, prove they fail back."""
    confirm = list(parameters.confirm)
    budgets, poll = parameters.budgets, parameters.poll_interval_seconds
    approve = Ask.of(parameters)
    primary = spec.primary.name
    vms_steps.require_confirmation(primary, confirm, "halt")
    restore_primary_first(spec)
    both = (primary, spec.replica.name)
    require_lab_state(spec, "failover_drill", running=both, code_manager=True, replica=True)
    checks.check_failover_ready(spec)
    approve(f"halt {primary} (the failover drill starts it again after)")
    try:
        marks = markers.write_markers(
            spec,
            run_id=root_run_id(),
            budget_seconds=budgets.replication_latency_seconds,
            poll_interval=poll,
        )
        if marks.removed_before:
            left = ", ".join(marks.removed_before)
            note(f"replaced markers an earlier drill or attempt left: {left}")
        # Uncommitted on failure: a Retry halts the primary again rather than resuming
        # mid-outage. Rolled back, whatever stopped it (a failed check, the halt itself, a stop
        # signal), by the halt's undo: the primary started again (restore_primary_first is the
        # crash's backstop).
        with transaction() as txn:
            txn.on_rollback_hooks.append(lambda _txn: bring_primary_back(spec))
            outage = markers.halt_primary(spec, primary, confirm, marks, poll)
            checks.check_primary_down(spec)
            # before any agent run on the replica replaces the agent's facts there
            served = markers.check_replica_serves(
                spec,
                markers=marks,
                outage=outage,
                rpo_budget=budgets.rpo_seconds,
                latency_budget=budgets.replication_latency_seconds,
                puppetdb_sync_budget=budgets.puppetdb_sync_seconds,
            )
            rto = checks.measure_failover(spec, outage.halt_returned_at, budgets.rto_seconds, poll)
            up_at = named(vms.start_vm, "start-primary")(spec, primary)
            back = checks.measure_failback(spec, up_at, budgets.failback_seconds, poll)
        checks.check_steady_state(
            spec, budget_seconds=budgets.steady_state_seconds, poll_interval=poll
        )
    except Exception:
        remove_the_markers(spec)
        raise
    except BaseException:  # a stop signal: the next attempt's write-markers replaces them
        note("the failover drill was stopped: its markers are removed by the next drill or Retry")
        raise
    remove_the_markers(spec)
    return {
        "rto_seconds": rto.seconds,
        "failback_seconds": back.seconds,
        "rpo_seconds": served.seconds,
        **served.figures,
    }
