"""The promotion (the tutorial's step 5): destroy the primary, promote the replica, then re-point
tokens, webhook and agents at it."""

from __future__ import annotations

from flows.approval import Ask
from flows.common import chapter
from flows.params import PromotionParameters
from pe_dr.lab.spec import LabSpec
from pe_dr.steps import vms as vms_steps
from tasks import checks, code_manager, replica, vms
from tasks.common import named
from tasks.lab import require_lab_state


@chapter()
def promotion(spec: LabSpec, parameters: PromotionParameters) -> dict[str, object]:
    """Destroy the primary and promote the replica, then re-point tokens, webhook and agents."""
    confirm = list(parameters.confirm)
    budgets, poll = parameters.budgets, parameters.poll_interval_seconds
    approve = Ask.of(parameters)
    primary, new_primary = spec.primary.name, spec.replica.name
    vms_steps.require_confirmation(primary, confirm, "destroy")
    require_lab_state(spec, "promotion", running=(new_primary,))
    keys = replica.ensure_secret_keys_copied(spec)
    approve(f"destroy {primary} and promote {new_primary} (irreversible)")
    began = named(replica.began, "promotion-begins")(spec)
    named(vms.destroy_vm, "destroy-primary")(spec, primary, confirm)
    replica.promote_replica(spec)
    named(replica.ensure_client_tools_point_at, "client-tools-to-new-primary")(spec, new_primary)
    named(code_manager.ensure_admin_token, "admin-token-new-primary")(spec, new_primary)
    replica.forget_old_primary(spec)
    named(code_manager.ensure_deploy_token, "deploy-token-new-primary")(spec, new_primary)
    project_id = code_manager.ensure_control_repo_project(spec)
    named(code_manager.ensure_webhook, "webhook-to-new-primary")(spec, project_id, new_primary)
    checks.check_promotion(
        spec,
        key_digests={k.path: k.sha256_prefix for k in keys},
        budget_seconds=budgets.promotion_seconds,
        poll_interval=poll,
        began=began,
    )
    named(code_manager.deploy_code, "code-deploy-on-new-primary")(spec, new_primary)
    return {"primary": new_primary}
