"""The monthly DR drill: set-up (ensured, so a built lab passes quickly), health gate,
replication, failover and failback, optionally promotion, and the report."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import Recorder, run_recorded
from flows.drills import failover_drill, promotion, replication_check
from flows.params import (
    CodeManagerParameters,
    DrillParameters,
    FailoverParameters,
    LabSetupParameters,
    PromotionParameters,
    ReplicaActivationParameters,
    ReplicationCheckParameters,
)
from flows.setup import code_manager_setup, lab_setup, replica_activation
from pe_dr import actions
from pe_dr.spec import LabSpec
from tasks import checks
from tasks.lab import restore_primary


def run_drill(rec: Recorder, spec: LabSpec, p: DrillParameters) -> dict[str, object]:
    if p.promote:
        actions.require_confirmation(spec.primary.name, list(p.confirm), "destroy")
    rec.restore_primary(restore_primary, spec)
    rec.subflow("lab-setup", lab_setup, LabSetupParameters(lab=spec))
    rec.subflow("code-manager-setup", code_manager_setup, CodeManagerParameters(lab=spec))
    rec.subflow(
        "replica-activation",
        replica_activation,
        ReplicaActivationParameters(lab=spec, poll_interval_seconds=p.poll_interval_seconds),
    )
    rec.step(checks.check_health, spec, expect_replica=True, name="health-gate")
    common: dict[str, Any] = {
        "lab": spec,
        "budgets": p.budgets,
        "poll_interval_seconds": p.poll_interval_seconds,
    }
    rec.subflow("replication-check", replication_check, ReplicationCheckParameters(**common))
    rec.subflow("failover-drill", failover_drill, FailoverParameters(confirm=p.confirm, **common))
    if p.promote:
        rec.subflow("promotion", promotion, PromotionParameters(confirm=p.confirm, **common))
    return dict(rec.report.measurements)


@flow(name="dr-drill", persist_result=True, log_prints=True)
def dr_drill(parameters: DrillParameters = DrillParameters()) -> dict[str, object]:
    """The DR drill: ensure the lab is built, gate on health, prove replication, failover and
    failback (and promotion when asked), and write the journal."""
    return run_recorded(
        "dr-drill",
        parameters.lab,
        lambda rec, spec: run_drill(rec, spec, parameters),
        planned_steps=51 if parameters.promote else 40,
        report_dir=parameters.report_dir,
        confirm=parameters.confirm,
        promote=parameters.promote,
    )
