"""Set-up flows: bring the lab up, configure Code Manager, activate the replica."""

from __future__ import annotations

from prefect import flow

from flows.common import Recorder, run_recorded
from flows.params import CodeManagerParameters, LabSetupParameters, ReplicaActivationParameters
from pe_dr.spec import LabSpec
from tasks import checks, code_manager, replica, vms
from tasks.lab import require_lab_state


def bring_up(rec: Recorder, spec: LabSpec) -> dict[str, str]:
    """The primary alongside GitLab; then the replica and agents, which install from the primary."""
    first = [spec.primary, spec.gitlab]
    second = [spec.replica, *spec.agents]
    states: dict[str, str] = {}
    rec.step(vms.ensure_box, spec)
    for wave in (first, second):
        calls = [(f"vm-up {h.name}", vms.ensure_vm_up, (spec, h.name)) for h in wave]
        for host, outcome in zip(wave, rec.parallel(calls), strict=True):
            states[host.name] = outcome
    return states


@flow(name="lab-setup", persist_result=True, log_prints=True)
def lab_setup(parameters: LabSetupParameters = LabSetupParameters()) -> dict[str, str]:
    """Bring the lab's VMs up in dependency order (the primary and GitLab first)."""
    return run_recorded("lab-setup", parameters.lab, bring_up, planned_steps=5)


def configure_code_manager(rec: Recorder, spec: LabSpec) -> dict[str, object]:
    primary_and_gitlab = (spec.primary.name, spec.gitlab.name)
    rec.step(
        require_lab_state, spec, "code_manager_setup", running=primary_and_gitlab, name="lab-ready"
    )
    rec.step(code_manager.ensure_admin_token, spec)
    rec.step(code_manager.check_agent_profile, spec)
    public_key = rec.step(code_manager.ensure_r10k_key, spec)
    rec.step(code_manager.ensure_gitlab_api_token, spec)
    rec.step(code_manager.ensure_gitlab_settings, spec)
    rec.step(code_manager.ensure_gitlab_trusts_lab_ca, spec)
    rec.step(code_manager.ensure_gitlab_ssh_key, spec, public_key)
    project_id = rec.step(code_manager.ensure_control_repo_project, spec)
    known_hosts = rec.step(code_manager.ensure_known_hosts, spec)
    commit = rec.step(code_manager.ensure_control_repo_pushed, spec)
    rec.step(code_manager.ensure_pe_master_params, spec, known_hosts)
    rec.step(code_manager.ensure_deploy_user, spec)
    rec.step(code_manager.ensure_deploy_token, spec)
    deployed = rec.step(code_manager.ensure_code_deployed, spec)
    rec.step(code_manager.ensure_webhook, spec, project_id)
    return {"project_id": project_id, "commit": commit, "deployed": deployed}


@flow(name="code-manager-setup", persist_result=True, log_prints=True)
def code_manager_setup(
    parameters: CodeManagerParameters = CodeManagerParameters(),
) -> dict[str, object]:
    """Configure Code Manager against the GitLab control repo, as the tutorial's step 1 does."""
    return run_recorded(
        "code-manager-setup", parameters.lab, configure_code_manager, planned_steps=16
    )


def activate_replica(rec: Recorder, spec: LabSpec, poll_interval: float) -> dict[str, object]:
    rec.step(
        require_lab_state,
        spec,
        "replica_activation",
        running=(spec.primary.name, spec.replica.name),
        code_manager=True,
        name="lab-ready",
    )
    rec.step(code_manager.ensure_admin_token, spec)
    enabled = rec.step(replica.ensure_replica_enabled, spec)
    keys = rec.step(replica.ensure_secret_keys_copied, spec)
    rec.step(replica.ensure_agent_config_pushed, spec, interval=poll_interval)
    rec.step(checks.check_health, spec, expect_replica=True)
    return {"replica": enabled, "keys": {k.path: k.sha256_prefix for k in keys}}


@flow(name="replica-activation", persist_result=True, log_prints=True)
def replica_activation(
    parameters: ReplicaActivationParameters = ReplicaActivationParameters(),
) -> dict[str, object]:
    """Provision and enable the replica, copy PE's secret keys to it, push agent configuration."""
    return run_recorded(
        "replica-activation",
        parameters.lab,
        lambda rec, spec: activate_replica(rec, spec, parameters.poll_interval_seconds),
        planned_steps=6,
    )
