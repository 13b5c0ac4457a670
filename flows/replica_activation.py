"""Replica activation (the tutorial's step 3): provision and enable the replica, copy PE's secret
keys, push the agents' configuration."""

from __future__ import annotations

from flows.common import chapter
from flows.params import ReplicaActivationParameters
from pe_dr.lab.spec import LabSpec
from tasks import checks, code_manager, replica
from tasks.lab import require_lab_state


@chapter()
def replica_activation(spec: LabSpec, parameters: ReplicaActivationParameters) -> dict[str, object]:
    """Provision and enable the replica, copy PE's secret keys to it, push agent configuration
    (the tutorial's step 3)."""
    poll_interval = parameters.poll_interval_seconds
    require_lab_state(
        spec,
        "replica_activation",
        running=(spec.primary.name, spec.replica.name),
        code_manager=True,
    )
    code_manager.ensure_admin_token(spec)
    enabled = replica.ensure_replica_enabled(spec)
    keys = replica.ensure_secret_keys_copied(spec)
    replica.ensure_agent_config_pushed(spec, interval=poll_interval)
    checks.check_health(spec, expect_replica=True)
    return {"replica": enabled, "keys": {k.path: k.sha256_prefix for k in keys}}
