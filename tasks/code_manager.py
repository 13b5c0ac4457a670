"""Tasks for the tutorial's Code Manager part: tokens, r10k key, GitLab, PE Master, first deploy."""

from __future__ import annotations

from pe_dr import actions
from pe_dr.lab import Lab
from pe_dr.parsers import KnownHost
from pe_dr.spec import LabSpec
from tasks.common import lab_task


@lab_task(timeout=300)
def ensure_admin_token(lab: LabSpec, server: str | None = None) -> str:
    with Lab(lab) as live:
        return actions.ensure_admin_token(live, server)


@lab_task(timeout=120)
def check_agent_profile(lab: LabSpec) -> dict[str, object]:
    with Lab(lab) as live:
        return actions.ensure_agent_profile(live)


@lab_task(timeout=1800)
def ensure_r10k_key(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_r10k_key(live)


@lab_task(timeout=1200)
def ensure_gitlab_api_token(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_gitlab_api_token(live)


@lab_task(timeout=120)
def ensure_gitlab_settings(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_gitlab_settings(live)


@lab_task(timeout=1800)
def ensure_gitlab_trusts_lab_ca(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_gitlab_trusts_lab_ca(live)


@lab_task(timeout=120)
def ensure_gitlab_ssh_key(lab: LabSpec, public_key: str) -> str:
    with Lab(lab) as live:
        return actions.ensure_gitlab_ssh_key(live, public_key)


@lab_task(timeout=120)
def ensure_control_repo_project(lab: LabSpec) -> int:
    with Lab(lab) as live:
        return actions.ensure_control_repo_project(live)


@lab_task(timeout=300)
def ensure_known_hosts(lab: LabSpec) -> list[KnownHost]:
    with Lab(lab) as live:
        return actions.ensure_known_hosts(live)


@lab_task(timeout=600)
def ensure_control_repo_pushed(lab: LabSpec, project_id: int) -> str:
    with Lab(lab) as live:
        return actions.ensure_control_repo_pushed(live)


@lab_task(timeout=2400)
def ensure_pe_master_params(lab: LabSpec, known_hosts: list[KnownHost]) -> str:
    with Lab(lab) as live:
        return actions.ensure_pe_master_params(live, known_hosts)


@lab_task(timeout=120)
def ensure_deploy_user(lab: LabSpec, server: str | None = None) -> str:
    with Lab(lab) as live:
        return actions.ensure_deploy_user(live, server)


@lab_task(timeout=300)
def ensure_deploy_token(lab: LabSpec, server: str | None = None) -> str:
    with Lab(lab) as live:
        return actions.ensure_deploy_token(live, server)


@lab_task(timeout=1800)
def ensure_code_deployed(lab: LabSpec, server: str | None = None, commit: str = "") -> str:
    with Lab(lab) as live:
        return actions.ensure_code_deployed(live, server)


@lab_task(timeout=1800)
def deploy_code(lab: LabSpec, server: str | None = None) -> str:
    with Lab(lab) as live:
        return actions.deploy_code(live, server)


@lab_task(timeout=120)
def ensure_webhook(lab: LabSpec, project_id: int, server: str | None = None) -> int:
    with Lab(lab) as live:
        return actions.ensure_webhook(live, project_id, server)
