"""Tasks that activate the replica (provision and enable, secret keys, agent configuration) and
promote it."""

from __future__ import annotations

from pe_dr.steps import promotion, replica, reprotect
from tasks.common import action_task

ensure_replica_enabled = action_task(
    replica.ensure_replica_enabled, timeout=7200, delays=(30, 60, 120)
)
ensure_secret_keys_copied = action_task(replica.ensure_secret_keys_copied, timeout=300)
ensure_agent_config_pushed = action_task(replica.ensure_agent_config_pushed, timeout=3600)
promote_replica = action_task(promotion.promote_replica, timeout=7200, retries=1, delays=(60,))
ensure_client_tools_point_at = action_task(promotion.ensure_client_tools_point_at, timeout=300)
forget_old_primary = action_task(promotion.forget_old_primary, timeout=1800)

# reprotect: the lost primary back as the new primary's replica
began = action_task(reprotect.began, timeout=60)
require_promoted = action_task(reprotect.require_promoted, timeout=300, name="lab-promoted")
ensure_lost_vm_cleared = action_task(reprotect.ensure_lost_vm_cleared, timeout=1800)
ensure_agent_certificate = action_task(reprotect.ensure_agent_certificate, timeout=3600)
