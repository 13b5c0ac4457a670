"""Tasks about the lab as a whole: is it in the state a flow needs, and is it whole."""

from __future__ import annotations

from pe_dr.steps import lab_state
from tasks.common import action_task

require_lab_state = action_task(
    lab_state.require_lab_state, timeout=300, retries=2, delays=(5, 15), name="lab-ready"
)
# Never cached: every run and every Retry first makes sure a halted primary is back.
restore_primary = action_task(
    lab_state.restore_primary, timeout=3600, delays=(30, 60, 120), cache=False
)

# Cached: a Retry keeps the roles its run began with (a promotion retried halfway must not see
# the roles it is changing).
lab_roles = action_task(lab_state.lab_roles, timeout=300, retries=1, delays=(5,), name="lab-roles")
