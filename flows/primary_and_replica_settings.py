"""The settings for primary and replica (the tutorial's step 2)."""

from __future__ import annotations

from flows.common import chapter
from flows.params import CodeManagerParameters
from pe_dr.lab.spec import LabSpec
from tasks import code_manager
from tasks.lab import require_lab_state


@chapter()
def primary_and_replica_settings(
    spec: LabSpec, parameters: CodeManagerParameters
) -> dict[str, object]:
    """The admin's token and the agent profile's server settings (the tutorial's step 2)."""
    require_lab_state(spec, "code_manager_setup", running=(spec.primary.name,))
    code_manager.ensure_admin_token(spec)
    profile = code_manager.check_agent_profile(spec)
    return {"agent_profile": profile}
