"""Set-up flows, as the tutorial's chapters: bring the lab up, configure Code Manager (step 1),
the settings for primary and replica (step 2), activate the replica (step 3)."""

from __future__ import annotations

from prefect.futures import wait

from flows.common import chapter
from flows.params import (
    CodeManagerParameters,
    LabSetupParameters,
    ReplicaActivationParameters,
)
from pe_dr.lab.spec import LabSpec
from tasks import checks, code_manager, replica, vms
from tasks.common import named
from tasks.lab import require_lab_state


def bring_up(spec: LabSpec) -> dict[str, str]:
    """The box first (parallel first runs race on its import); then the VMs in waves
    (pe_dr.steps.vms.bring_up_order: on a first run the primary alone)."""
    vms.ensure_box(spec)
    states: dict[str, str] = {}
    for wave in vms.bring_up_order(spec):
        ups = [named(vms.ensure_vm_up, f"vm-up {name}").submit(spec, name) for name in wave]
        wait(ups)  # every VM of the wave settles before the first failure is raised
        for name, up in zip(wave, ups, strict=True):
            states[name] = up.result()
    return states


@chapter("lab-setup")
def lab_setup(spec: LabSpec, parameters: LabSetupParameters) -> dict[str, str]:
    """Bring the lab's VMs up in dependency order (the primary and GitLab first)."""
    return bring_up(spec)


def configure_code_manager(spec: LabSpec) -> dict[str, object]:
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


@chapter("code-manager-setup")
def code_manager_setup(spec: LabSpec, parameters: CodeManagerParameters) -> dict[str, object]:
    """Configure Code Manager against the GitLab control repo (the tutorial's step 1)."""
    return configure_code_manager(spec)


def settle_primary_and_replica(spec: LabSpec) -> dict[str, object]:
    require_lab_state(spec, "code_manager_setup", running=(spec.primary.name,))
    code_manager.ensure_admin_token(spec)
    profile = code_manager.check_agent_profile(spec)
    return {"agent_profile": profile}


@chapter("primary-and-replica-settings")
def primary_and_replica_settings(
    spec: LabSpec, parameters: CodeManagerParameters
) -> dict[str, object]:
    """The admin's token and the agent profile's server settings (the tutorial's step 2)."""
    return settle_primary_and_replica(spec)


def activate_replica(spec: LabSpec, poll_interval: float) -> dict[str, object]:
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


@chapter("replica-activation")
def replica_activation(spec: LabSpec, parameters: ReplicaActivationParameters) -> dict[str, object]:
    """Provision and enable the replica, copy PE's secret keys to it, push agent configuration
    (the tutorial's step 3)."""
    return activate_replica(spec, parameters.poll_interval_seconds)
