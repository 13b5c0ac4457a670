"""Tasks that fetch the box and start, halt and destroy the lab's VMs (vagrant)."""

from __future__ import annotations

from pe_dr.steps import vms
from tasks.common import action_task

ensure_box = action_task(vms.ensure_box, timeout=3600, delays=(30, 60, 120))
bring_up_order = action_task(vms.bring_up_order, timeout=300)
ensure_vm_up = action_task(vms.ensure_vm_up, timeout=3600, delays=(30, 60, 120))


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
