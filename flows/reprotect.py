"""Reprotect, after a promotion: the lost primary's VM rebuilt as the new primary's replica."""

from __future__ import annotations

from flows.common import chapter, note
from flows.params import ReplicaActivationParameters, ReprotectParameters
from flows.replica_activation import replica_activation
from pe_dr.lab.spec import LabSpec
from tasks import checks, replica, vms
from tasks.common import named


@chapter()
def reprotect(spec: LabSpec, parameters: ReprotectParameters) -> dict[str, object]:
    """After a promotion, rebuild the lost primary's VM as the new primary's replica. `spec` has
    the roles of the promoted lab: its primary is the promoted server, its replica the VM to
    rebuild as that server's replica."""
    confirm = list(parameters.confirm)
    budgets, poll = parameters.budgets, parameters.poll_interval_seconds
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
