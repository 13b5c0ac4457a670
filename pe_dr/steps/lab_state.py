"""Whether the lab is in the state a flow needs, and whole (a primary a crash left halted).

Plain Python over a Lab: look, act only if needed; pe_dr.tasks makes a Prefect task of each.
"""

from __future__ import annotations

from pe_dr.errors import (
    PreconditionError,
)
from pe_dr.lab.live import Lab
from pe_dr.steps.code_manager import code_manager_answers
from pe_dr.steps.replica import replica_enabled
from pe_dr.steps.vms import ensure_vm_up


def require_lab_state(
    lab: Lab,
    flow: str,
    *,
    running: tuple[str, ...] = (),
    code_manager: bool = False,
    replica: bool = False,
) -> str:
    """Refuse, in one sentence, to run `flow` on a lab that is not in the state it needs."""
    states = lab.vagrant.status()
    for name in running:
        vm = lab.spec.host(name).name
        if states.get(vm) != "running":
            raise PreconditionError(
                f"{flow} needs {vm} running but it is {states.get(vm, 'unknown')}: "
                "run lab_setup first"
            )
    if code_manager and not code_manager_answers(lab):
        raise PreconditionError(
            f"{flow} needs Code Manager on {lab.spec.primary.name}: run code_manager_setup first"
        )
    if replica and not replica_enabled(lab):
        raise PreconditionError(
            f"{flow} needs {lab.spec.replica.name} enabled as a replica: "
            "run replica_activation first"
        )
    return "ready"


def restore_primary(lab: Lab) -> str | None:
    """Start the primary if a drill left it halted (a crash mid-failover); None if it was not."""
    primary = lab.spec.primary.name
    state = lab.vagrant.state(primary)
    if state in {"running", "not_created"}:
        return None
    ensure_vm_up(lab, primary)
    return f"{primary} was {state}; started it again so the lab is whole"
