"""Tasks for the tutorial's Code Manager part: tokens, r10k key, GitLab, PE Master, first deploy.

Chapter 2 (the admin token and the agent profile) and chapter 3 (Code Manager against GitLab)."""

from __future__ import annotations

from pe_dr.steps import code_manager, primary_settings
from tasks.common import action_task

# chapter 2: the admin token and the agent profile
ensure_admin_token = action_task(primary_settings.ensure_admin_token, timeout=300)
check_agent_profile = action_task(
    primary_settings.ensure_agent_profile, timeout=120, name="check-agent-profile"
)

# chapter 3: Code Manager against a GitLab control repo
ensure_r10k_key = action_task(code_manager.ensure_r10k_key, timeout=1800)
ensure_gitlab_api_token = action_task(code_manager.ensure_gitlab_api_token, timeout=1200)
ensure_gitlab_settings = action_task(code_manager.ensure_gitlab_settings, timeout=120)
ensure_gitlab_trusts_lab_ca = action_task(code_manager.ensure_gitlab_trusts_lab_ca, timeout=1800)
ensure_gitlab_ssh_key = action_task(code_manager.ensure_gitlab_ssh_key, timeout=120)
ensure_control_repo_project = action_task(code_manager.ensure_control_repo_project, timeout=120)
ensure_known_hosts = action_task(code_manager.ensure_known_hosts, timeout=300)
ensure_control_repo_pushed = action_task(code_manager.ensure_control_repo_pushed, timeout=600)
ensure_pe_master_params = action_task(code_manager.ensure_pe_master_params, timeout=2400)
ensure_deploy_user = action_task(code_manager.ensure_deploy_user, timeout=120)
ensure_deploy_token = action_task(code_manager.ensure_deploy_token, timeout=300)
ensure_code_deployed = action_task(code_manager.ensure_code_deployed, timeout=1800)
deploy_code = action_task(code_manager.deploy_code, timeout=1800)
ensure_webhook = action_task(code_manager.ensure_webhook, timeout=120)
