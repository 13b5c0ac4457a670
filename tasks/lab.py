"""Tasks about the lab as a whole: is it in the state a flow needs, and is it whole."""

from __future__ import annotations

from pe_dr import actions
from pe_dr.lab import Lab
from pe_dr.spec import LabSpec
from tasks.common import lab_task


@lab_task(timeout=300, retries=2, delays=(5, 15))
def require_lab_state(
    lab: LabSpec,
    flow: str,
    running: tuple[str, ...] = (),
    code_manager: bool = False,
    replica: bool = False,
) -> str:
    with Lab(lab) as live:
        return actions.require_lab_state(
            live, flow, running=running, code_manager=code_manager, replica=replica
        )


@lab_task(timeout=3600, delays=(30, 60, 120), cache=False)
def restore_primary(lab: LabSpec) -> str:
    """Never cached: every run and every Retry first makes sure a halted primary is back."""
    with Lab(lab) as live:
        return actions.restore_primary(live) or "primary not halted"
