"""Drill flows, as the tutorial's chapters: replication check, failover drill (step 4),
promotion (step 5), teardown (clean-up)."""

from __future__ import annotations

import sys

from prefect.runtime import flow_run
from prefect.transactions import transaction

from flows.approval import Ask
from flows.common import chapter, note
from flows.params import (
    Budgets,
    FailoverParameters,
    PromotionParameters,
    ReplicaActivationParameters,
    ReplicationCheckParameters,
    ReprotectParameters,
    TeardownParameters,
)
from flows.setup import replica_activation
from pe_dr import interrupts
from pe_dr.errors import PreconditionError
from pe_dr.lab.spec import LabSpec
from pe_dr.secrets import scrub
from pe_dr.steps import vms as vms_steps
from tasks import checks, code_manager, markers, replica, vms
from tasks.common import named
from tasks.lab import require_lab_state, restore_primary


def marker_id() -> str:
    """Stable across Retries of one run, so a completed replication check stays cached."""
    return str(flow_run.root_flow_run_id or flow_run.id)


def prove_replication(spec: LabSpec, budgets: Budgets, poll: float) -> dict[str, object]:
    both = (spec.primary.name, spec.replica.name)
    require_lab_state(spec, "replication_check", running=both, code_manager=True, replica=True)
    result = checks.check_replication(
        spec,
        marker_id=marker_id(),
        budget_seconds=budgets.replication_lag_seconds,
        poll_interval=poll,
    )
    commit = str(result.evidence.get("commit", ""))
    checks.check_agent_on_both(spec, commit=commit)
    return {"commit": commit, "replication_lag_seconds": result.seconds}


@chapter("replication-check")
def replication_check(spec: LabSpec, parameters: ReplicationCheckParameters) -> dict[str, object]:
    """Commit a marker to the control repo and prove it reaches the replica; measure the lag."""
    return prove_replication(spec, parameters.budgets, parameters.poll_interval_seconds)


def restore_primary_first(spec: LabSpec) -> None:
    """The lab is whole before anything else: a primary a crash left halted is started."""
    outcome = restore_primary(spec)
    if outcome:  # None: the primary was not halted
        note(str(outcome))


def fail_over_and_back(
    spec: LabSpec, confirm: list[str], budgets: Budgets, poll: float, approve: Ask = Ask()
) -> dict[str, object]:
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
            run_id=marker_id(),
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


@chapter("failover-drill")
def failover_drill(spec: LabSpec, parameters: FailoverParameters) -> dict[str, object]:
    """Halt the primary, prove agents fail over to the replica; start it, prove they fail back."""
    return fail_over_and_back(
        spec,
        list(parameters.confirm),
        parameters.budgets,
        parameters.poll_interval_seconds,
        Ask.of(parameters),
    )


def promote_the_replica(
    spec: LabSpec, confirm: list[str], budgets: Budgets, poll: float, approve: Ask = Ask()
) -> dict[str, object]:
    primary, new_primary = spec.primary.name, spec.replica.name
    vms_steps.require_confirmation(primary, confirm, "destroy")
    require_lab_state(spec, "promotion", running=(new_primary,))
    keys = replica.ensure_secret_keys_copied(spec)
    approve(f"destroy {primary} and promote {new_primary} (irreversible)")
    began = named(replica.began, "promotion-begins")(spec)
    named(vms.destroy_vm, "destroy-primary")(spec, primary, confirm)
    replica.promote_replica(spec)
    named(replica.ensure_client_tools_point_at, "client-tools-to-new-primary")(spec, new_primary)
    named(code_manager.ensure_admin_token, "admin-token-new-primary")(spec, new_primary)
    replica.forget_old_primary(spec)
    named(code_manager.ensure_deploy_token, "deploy-token-new-primary")(spec, new_primary)
    project_id = code_manager.ensure_control_repo_project(spec)
    named(code_manager.ensure_webhook, "webhook-to-new-primary")(spec, project_id, new_primary)
    checks.check_promotion(
        spec,
        key_digests={k.path: k.sha256_prefix for k in keys},
        budget_seconds=budgets.promotion_seconds,
        poll_interval=poll,
        began=began,
    )
    named(code_manager.deploy_code, "code-deploy-on-new-primary")(spec, new_primary)
    return {"primary": new_primary}


def reprotect_the_lab(
    spec: LabSpec, confirm: list[str], budgets: Budgets, poll: float
) -> dict[str, object]:
    """`spec` has the roles of the promoted lab: its primary is the promoted server, its replica
    the VM to rebuild as that server's replica."""
    primary, lost = spec.primary.name, spec.replica.name
    began = named(replica.began, "reprotect-begins")(spec)
    if replica.require_promoted(spec) == "already protected":
        note(f"{lost} is already the replica of {primary}: nothing to reprotect")
        return {"primary": primary, "replica": lost, "reprotect": "already protected"}
    replica.ensure_lost_vm_cleared(spec, confirm)
    named(vms.ensure_vm_up, f"vm-up {lost}")(spec, lost)
    replica.ensure_agent_certificate(spec, lost)
    replica_activation(ReplicaActivationParameters(lab=spec, poll_interval_seconds=poll))
    result = checks.check_reprotected(spec, began=began, budget_seconds=budgets.reprotect_seconds)
    return {"primary": primary, "replica": lost, "reprotect_seconds": result.seconds}


@chapter("reprotect", history=True)
def reprotect(spec: LabSpec, parameters: ReprotectParameters) -> dict[str, object]:
    """After a promotion, rebuild the lost primary's VM as the new primary's replica."""
    return reprotect_the_lab(
        spec, list(parameters.confirm), parameters.budgets, parameters.poll_interval_seconds
    )


@chapter("promotion", history=True)
def promotion(spec: LabSpec, parameters: PromotionParameters) -> dict[str, object]:
    """Destroy the primary and promote the replica, then re-point tokens, webhook and agents."""
    return promote_the_replica(
        spec,
        list(parameters.confirm),
        parameters.budgets,
        parameters.poll_interval_seconds,
        Ask.of(parameters),
    )


def tear_down(spec: LabSpec, confirm: list[str], approve: Ask = Ask()) -> dict[str, str]:
    if not confirm:
        raise PreconditionError("teardown destroys VMs: name them in `confirm` (--yes)")
    order = [*spec.agents, spec.replica, spec.gitlab, spec.primary]
    approve(f"destroy {', '.join(h.name for h in order if h.name in confirm)} (irreversible)")
    done = {}
    for host in order:
        if host.name in confirm:
            named(vms.destroy_vm, f"destroy {host.name}")(spec, host.name, confirm)
            done[host.name] = "destroyed"
    return done


@chapter("teardown")
def teardown(spec: LabSpec, parameters: TeardownParameters) -> dict[str, str]:
    """Destroy the lab's VMs named in `confirm`."""
    return tear_down(spec, list(parameters.confirm), Ask.of(parameters))
