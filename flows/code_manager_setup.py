"""Code Manager set-up (the tutorial's step 1) against the GitLab control repo."""

from __future__ import annotations

from flows.common import chapter
from flows.params import CodeManagerParameters
from pe_dr.lab.spec import LabSpec
from tasks import code_manager
from tasks.lab import require_lab_state


@chapter()
def code_manager_setup(spec: LabSpec, parameters: CodeManagerParameters) -> dict[str, object]:
    """Configure Code Manager against the GitLab control repo (the tutorial's step 1)."""
    require_lab_state(spec, "code_manager_setup", running=(spec.primary.name, spec.gitlab.name))
    code_manager.ensure_admin_token(spec)  # its RBAC calls need one
    public_key = code_manager.ensure_r10k_key(spec)
    code_manager.ensure_gitlab_api_token(spec)
    code_manager.ensure_gitlab_settings(spec)
    code_manager.ensure_gitlab_trusts_lab_ca(spec)
    code_manager.ensure_gitlab_ssh_key(spec, public_key)
    project_id = code_manager.ensure_control_repo_project(spec)
    known_hosts = code_manager.ensure_known_hosts(spec)
    commit = code_manager.ensure_control_repo_pushed(spec)
    code_manager.ensure_pe_master_params(spec, known_hosts)
    code_manager.ensure_deploy_user(spec)
    code_manager.ensure_deploy_token(spec)
    deployed = code_manager.ensure_code_deployed(spec)
    code_manager.ensure_webhook(spec, project_id)
    return {"project_id": project_id, "commit": commit, "deployed": deployed}
