"""Drill flows: replication check, failover drill, promotion, teardown."""

from __future__ import annotations

import sys

from prefect import flow
from prefect.runtime import flow_run
from prefect.transactions import transaction

from flows.common import Recorder, run_recorded
from flows.params import (
    Budgets,
    FailoverParameters,
    PromotionParameters,
    ReplicationCheckParameters,
    TeardownParameters,
)
from pe_dr import actions, interrupts
from pe_dr.errors import PreconditionError
from pe_dr.spec import LabSpec
from tasks import checks, code_manager, replica, vms
from tasks.lab import require_lab_state, restore_primary


def marker_id() -> str:
    """Stable across Retries of one run, so a completed replication check stays cached."""
    return str(flow_run.root_flow_run_id or flow_run.id)


def run_replication_check(
    rec: Recorder, spec: LabSpec, budgets: Budgets, poll: float
) -> dict[str, object]:
    rec.step(
        require_lab_state,
        spec,
        "replication_check",
        running=(spec.primary.name, spec.replica.name),
        code_manager=True,
        replica=True,
        name="lab-ready",
    )
    result = rec.step(
        checks.check_replication,
        spec,
        marker_id=marker_id(),
        budget_seconds=budgets.replication_lag_seconds,
        poll_interval=poll,
    )
    rec.measure("replication_lag_seconds", result)
    commit = str(result.evidence.get("commit", ""))
    rec.step(checks.check_agent_on_both, spec, commit=commit)
    return {"commit": commit, "replication_lag_seconds": result.seconds}


@flow(name="replication-check", persist_result=True, log_prints=True)
def replication_check(
    parameters: ReplicationCheckParameters = ReplicationCheckParameters(),
) -> dict[str, object]:
    """Commit a marker to the control repo and prove it reaches the replica; measure the lag."""
    return run_recorded(
        "replication-check",
        parameters.lab,
        lambda rec, spec: run_replication_check(
            rec, spec, parameters.budgets, parameters.poll_interval_seconds
        ),
        planned_steps=4,
    )


def run_failover(
    rec: Recorder, spec: LabSpec, confirm: list[str], budgets: Budgets, poll: float
) -> dict[str, object]:
    primary = spec.primary.name
    actions.require_confirmation(primary, confirm, "halt")
    rec.restore_primary(restore_primary, spec)
    rec.step(
        require_lab_state,
        spec,
        "failover_drill",
        running=(primary, spec.replica.name),
        code_manager=True,
        replica=True,
        name="lab-ready",
    )
    rec.step(checks.check_failover_ready, spec)
    # Uncommitted on failure: a Retry halts the primary again rather than resuming mid-outage.
    # Rolled back, whatever stopped it (a failed check, the halt itself, a stop signal), by the
    # halt's undo: the primary started again (restore_primary above is the backstop for a crash).
    with transaction() as txn:
        txn.on_rollback_hooks.append(lambda _txn: bring_primary_back(rec, spec))
        down_at = rec.step(vms.halt_vm, spec, primary, confirm, name="halt-primary")
        rec.step(checks.check_primary_down, spec)
        rto = rec.step(checks.measure_failover, spec, down_at, budgets.rto_seconds, poll)
        rec.measure("rto_seconds", rto)
        up_at = rec.step(vms.start_vm, spec, primary, name="start-primary")
        back = rec.step(checks.measure_failback, spec, up_at, budgets.failback_seconds, poll)
        rec.measure("failback_seconds", back)
    return {
        "rto_seconds": rec.report.measurements.get("rto_seconds"),
        "failback_seconds": rec.report.measurements.get("failback_seconds"),
    }


def bring_primary_back(rec: Recorder, spec: LabSpec) -> None:
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
            outcome = rec.step(start, spec, name="start-primary-again")
        except BaseException as exc:
            rec.note(
                f"the failover drill {why} while {primary} was down, and starting it again "
                f"failed: {exc} (the next drill or Retry starts it first)"
            )
            return
    if outcome == "already running":
        rec.note(f"the failover drill {why}; {primary} was running, nothing to start")
    else:
        rec.note(f"the failover drill {why} while {primary} was down; started it again")


@flow(name="failover-drill", persist_result=True, log_prints=True)
def failover_drill(parameters: FailoverParameters = FailoverParameters()) -> dict[str, object]:
    """Halt the primary, prove agents fail over to the replica; start it, prove they fail back."""
    return run_recorded(
        "failover-drill",
        parameters.lab,
        lambda rec, spec: run_failover(
            rec,
            spec,
            list(parameters.confirm),
            parameters.budgets,
            parameters.poll_interval_seconds,
        ),
        planned_steps=10,
        confirm=parameters.confirm,
    )


def run_promotion(
    rec: Recorder, spec: LabSpec, confirm: list[str], budgets: Budgets, poll: float
) -> dict[str, object]:
    primary, new_primary = spec.primary.name, spec.replica.name
    actions.require_confirmation(primary, confirm, "destroy")
    rec.step(require_lab_state, spec, "promotion", running=(new_primary,), name="lab-ready")
    keys = rec.step(replica.ensure_secret_keys_copied, spec)
    digests = {k.path: k.sha256_prefix for k in keys}
    rec.step(vms.destroy_vm, spec, primary, confirm, name="destroy-primary")
    rec.step(replica.promote_replica, spec)
    rec.step(
        replica.ensure_client_tools_point_at, spec, new_primary, name="client-tools-to-new-primary"
    )
    rec.step(code_manager.ensure_admin_token, spec, new_primary, name="admin-token-new-primary")
    rec.step(replica.forget_old_primary, spec)
    rec.step(code_manager.ensure_deploy_token, spec, new_primary, name="deploy-token-new-primary")
    project_id = rec.step(code_manager.ensure_control_repo_project, spec)
    rec.step(
        code_manager.ensure_webhook, spec, project_id, new_primary, name="webhook-to-new-primary"
    )
    rec.step(
        checks.check_promotion,
        spec,
        key_digests=digests,
        budget_seconds=budgets.promotion_seconds,
        poll_interval=poll,
    )
    rec.step(code_manager.deploy_code, spec, new_primary, name="code-deploy-on-new-primary")
    return {"primary": new_primary}


@flow(name="promotion", persist_result=True, log_prints=True)
def promotion(parameters: PromotionParameters = PromotionParameters()) -> dict[str, object]:
    """Destroy the primary and promote the replica, then re-point tokens, webhook and agents."""
    return run_recorded(
        "promotion",
        parameters.lab,
        lambda rec, spec: run_promotion(
            rec,
            spec,
            list(parameters.confirm),
            parameters.budgets,
            parameters.poll_interval_seconds,
        ),
        planned_steps=13,
        confirm=parameters.confirm,
    )


def run_teardown(rec: Recorder, spec: LabSpec, confirm: list[str]) -> dict[str, str]:
    if not confirm:
        raise PreconditionError("teardown destroys VMs: name them in `confirm` (--yes)")
    order = [*spec.agents, spec.replica, spec.gitlab, spec.primary]
    done = {}
    for host in order:
        if host.name in confirm:
            done[host.name] = rec.step(
                vms.destroy_vm, spec, host.name, confirm, name=f"destroy {host.name}"
            )
    return done


@flow(name="teardown", persist_result=True, log_prints=True)
def teardown(parameters: TeardownParameters = TeardownParameters()) -> dict[str, str]:
    """Destroy the lab's VMs named in `confirm`."""
    return run_recorded(
        "teardown",
        parameters.lab,
        lambda rec, spec: run_teardown(rec, spec, list(parameters.confirm)),
        planned_steps=5,
        confirm=parameters.confirm,
    )
