"""The monthly DR drill, chapter by chapter: set-up (ensured, so a built lab passes quickly),
a health gate, replication, failover and failback, optionally promotion; the record it returns
is read from Prefect (flows.journal)."""

from __future__ import annotations

from typing import Any

from flows import approval
from flows.code_manager_setup import code_manager_setup
from flows.common import chapter
from flows.failover_drill import failover_drill, restore_primary_first
from flows.lab_setup import lab_setup
from flows.params import (
    CodeManagerParameters,
    DrillParameters,
    FailoverParameters,
    LabSetupParameters,
    PromotionParameters,
    ReplicaActivationParameters,
    ReplicationCheckParameters,
    ReprotectParameters,
)
from flows.primary_and_replica_settings import primary_and_replica_settings
from flows.promotion import promotion
from flows.replica_activation import replica_activation
from flows.replication_check import replication_check
from flows.reprotect import reprotect
from pe_dr.lab.spec import LabSpec
from pe_dr.steps import vms
from tasks import checks
from tasks.common import named


def drill_every_chapter(spec: LabSpec, p: DrillParameters) -> None:
    if p.promote:
        vms.require_confirmation(spec.primary.name, list(p.confirm), "destroy")
    approval.require_possible(p.approval)  # before the lab is touched, not an hour in
    restore_primary_first(spec)
    lab_setup(LabSetupParameters(lab=spec))
    code_manager_setup(CodeManagerParameters(lab=spec))
    primary_and_replica_settings(CodeManagerParameters(lab=spec))
    replica_activation(
        ReplicaActivationParameters(lab=spec, poll_interval_seconds=p.poll_interval_seconds)
    )
    named(checks.check_health, "health-gate")(spec, expect_replica=True)
    common: dict[str, Any] = {
        "lab": spec,
        "budgets": p.budgets,
        "poll_interval_seconds": p.poll_interval_seconds,
    }
    replication_check(ReplicationCheckParameters(**common))
    and_promote = f", then destroy it and promote {spec.replica.name} (irreversible)"
    approval.Ask.of(p)(
        f"halt {spec.primary.name} to prove failover{and_promote if p.promote else ''}"
    )
    failover_drill(FailoverParameters(confirm=p.confirm, **common))
    if p.promote:
        promotion(PromotionParameters(confirm=p.confirm, **common))
        if p.reprotect:
            # the roles are swapped now: the promoted server is the primary
            swapped = {**common, "lab": spec.with_primary(spec.replica.name)}
            reprotect(ReprotectParameters(confirm=p.confirm, **swapped))


@chapter(history=True)
def dr_drill(spec: LabSpec, parameters: DrillParameters) -> None:
    """The DR drill: ensure the lab is built, gate on health, prove replication, failover and
    failback (and promotion when asked); returns the drill's record and writes the journal."""
    drill_every_chapter(spec, parameters)
