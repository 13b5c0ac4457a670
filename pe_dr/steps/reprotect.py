"""After a promotion, protect the lab again: the VM that was the primary comes back as an agent of
the promoted primary, then becomes its replica (VMware SRM and Azure Site Recovery call this
step reprotect; peadm's own failover test adds a new replica after promoting:
real-world-findings §4.3).

The lab spec given here has its roles as they are now (pe_dr.steps.lab_state.lab_roles): its
primary is the promoted server, its replica the VM to rebuild. Plain Python over a Lab: look, act
only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

import time

from pe_dr.errors import CommandFailed, PreconditionError
from pe_dr.lab.live import Lab
from pe_dr.steps.promotion import is_primary
from pe_dr.steps.replica import agent_server_list, replica_enabled
from pe_dr.steps.vms import require_confirmation

# Puppet 7's words when the CA has not signed an agent's request (waitforcert 0, as `-t` has)
UNSIGNED = "you might still need to sign this agent's certificate"


def began(lab: Lab) -> float:
    """Now (epoch): when a chapter whose duration is a figure began (cached: a Retry keeps it)."""
    return time.time()


def require_promoted(lab: Lab) -> str:
    """Reprotect needs a promoted lab: its primary is PE's primary, and the other VM is not yet
    PE's enabled replica ("already protected" when it is: nothing to do)."""
    primary, lost = lab.spec.primary.name, lab.spec.replica.name
    if lab.vagrant.state(primary) != "running" or not is_primary(lab, primary):
        raise PreconditionError(
            f"reprotect needs {primary} to be PE's primary after a promotion, and it is not: "
            "run the promotion first"
        )
    if lab.vagrant.state(lost) == "running" and replica_enabled(lab):
        return "already protected"
    return "promoted"


def ensure_lost_vm_cleared(lab: Lab, confirm: list[str]) -> str:
    """The VM to rebuild is either not created (a promotion destroys it) or already an agent of
    the new primary (an earlier attempt rebuilt it); anything else still holds the old primary's
    installation and is destroyed, only when `confirm` names it."""
    primary, lost = lab.spec.primary.name, lab.spec.replica.name
    state = lab.vagrant.state(lost)
    if state == "not_created":
        return "not created"
    if state == "running":
        try:
            servers = agent_server_list(lab, lost)
        except CommandFailed:
            servers = []
        if servers and servers[0].split(":")[0] == primary:
            return f"already an agent of {primary}"
    require_confirmation(lost, confirm, "destroy")
    lab.forget_host(lost)
    lab.vagrant.destroy(lost)
    return "destroyed"


def ensure_agent_certificate(lab: Lab, vm: str) -> str:
    """`vm`'s agent has a signed certificate from the new primary, the CA since the promotion.
    The tutorial lab's primary autosigns (its provisioning writes autosign.conf), a promoted
    replica does not: a waiting request is signed with `puppetserver ca sign`, and a Puppet run
    then proves it."""
    argv = ["puppet", "agent", "-t"]
    out = lab.host(vm).run(argv, root=True, ok_codes=(0, 1, 2), timeout=1800)
    if out.exit_code in (0, 2):
        return "signed"
    if UNSIGNED not in out.stdout + out.stderr:
        raise CommandFailed(lab.host(vm).name, " ".join(argv), 1, out.stdout, out.stderr)
    primary = lab.spec.primary.name
    lab.host(primary).run(["puppetserver", "ca", "sign", "--certname", vm], root=True)
    lab.host(vm).run(argv, root=True, ok_codes=(0, 2), timeout=1800)
    return f"signed by {primary}"
