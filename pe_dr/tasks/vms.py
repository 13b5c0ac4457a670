"""Tasks that fetch the box and start, halt and destroy the lab's VMs (vagrant)."""

from __future__ import annotations

import time

from pe_dr.errors import PreconditionError
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.steps import vms
from pe_dr.tasks.common import action_task, lab_task

ensure_box = action_task(vms.ensure_box, timeout=3600, delays=(30, 60, 120))
ensure_vm_up = action_task(vms.ensure_vm_up, timeout=3600, delays=(30, 60, 120))


@lab_task(timeout=600, retries=2)
def halt_vm(lab: LabSpec, vm: str, confirm: list[str]) -> float:
    """Halt `vm`; returns the epoch time it was down (the start of the RTO clock).

    A VM that is already down is refused on the first attempt: the RTO clock would start in the
    middle of an outage nobody timed (a retry of this task, after a halt that went through but
    reported an error, takes the VM as it is)."""
    from prefect.runtime import task_run

    with Lab(lab) as live:
        vms.require_confirmation(lab.host(vm).name, confirm, "halt")
        state = live.vagrant.state(lab.host(vm).name)
        if state != "running" and (task_run.run_count or 1) <= 1:
            raise PreconditionError(
                f"{vm} is {state} before the halt: a failover measured from now would time "
                "an outage already under way; start it first (a Retry does)"
            )
        vms.halt_vm(live, vm, confirm)
    return time.time()


start_vm = action_task(vms.start_vm, timeout=3600, delays=(30, 60, 120))


# The undo of the failover's halt (its transaction's rollback): never cached, each rollback
# acts; "already running" when the halt never took or the drill had started it.
start_primary_again = action_task(
    vms.start_primary,
    timeout=3600,
    delays=(30, 60, 120),
    cache=False,
    name="start-primary-again",
)


destroy_vm = action_task(vms.destroy_vm, timeout=1800, retries=2)
