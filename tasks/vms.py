"""Tasks that start, halt and destroy the lab's VMs (vagrant) and read their states."""

from __future__ import annotations

import time

from pe_dr import actions
from pe_dr.errors import PreconditionError
from pe_dr.lab import Lab
from pe_dr.spec import LabSpec
from tasks.common import lab_task


@lab_task(timeout=3600, delays=(30, 60, 120))
def ensure_box(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_box(live)


@lab_task(timeout=3600, delays=(30, 60, 120))
def ensure_vm_up(lab: LabSpec, vm: str) -> str:
    with Lab(lab) as live:
        return actions.ensure_vm_up(live, vm)


@lab_task(timeout=600, retries=2)
def halt_vm(lab: LabSpec, vm: str, confirm: list[str]) -> float:
    """Halt `vm`; returns the epoch time it was down (the start of the RTO clock).

    A VM that is already down is refused on the first attempt: the RTO clock would start in the
    middle of an outage nobody timed (a retry of this task, after a halt that went through but
    reported an error, takes the VM as it is)."""
    from prefect.runtime import task_run

    with Lab(lab) as live:
        actions.require_confirmation(lab.host(vm).name, confirm, "halt")
        state = live.vagrant.state(lab.host(vm).name)
        if state != "running" and (task_run.run_count or 1) <= 1:
            raise PreconditionError(
                f"{vm} is {state} before the halt: a failover measured from now would time "
                "an outage already under way; start it first (a Retry does)"
            )
        actions.halt_vm(live, vm, confirm)
    return time.time()


@lab_task(timeout=3600, delays=(30, 60, 120))
def start_vm(lab: LabSpec, vm: str) -> float:
    """Start `vm` again; returns the epoch time it answered (the start of the failback clock)."""
    with Lab(lab) as live:
        actions.ensure_vm_up(live, vm)
    return time.time()


@lab_task(timeout=3600, delays=(30, 60, 120), cache=False)
def start_primary_again(lab: LabSpec) -> str:
    """The undo of the failover's halt (its transaction's rollback): never cached, each rollback
    acts; "already running" when the halt never took or the drill had started it."""
    with Lab(lab) as live:
        return actions.ensure_vm_up(live, lab.primary.name)


@lab_task(timeout=1800, retries=2)
def destroy_vm(lab: LabSpec, vm: str, confirm: list[str]) -> str:
    with Lab(lab) as live:
        actions.destroy_vm(live, vm, confirm)
    return "destroyed"


@lab_task(timeout=120, retries=2, delays=(5, 10), cache=False)
def vm_states(lab: LabSpec) -> dict[str, str]:
    with Lab(lab) as live:
        return live.vagrant.status()
