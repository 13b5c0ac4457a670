"""The tutorial's step 3, activate the replica: provision and enable it, copy PE's secret keys,
push the agents' configuration.

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pe_dr.errors import (
    CommandFailed,
    TransientError,
)
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.parsing.pe import ServiceStatus, parse_infra_status
from pe_dr.polling import wait_until
from pe_dr.secrets import remember


def infra_status(lab: Lab, server: str | None = None) -> list[ServiceStatus]:
    out = lab.host(server or lab.spec.primary.name).run(
        ["puppet", "infrastructure", "status", "--format=json"],
        root=True,
        ok_codes=(0, 1),
        timeout=300,
    )
    return parse_infra_status(out.stdout)


def replica_enabled(lab: Lab, *, primary: str | None = None, replica: str | None = None) -> bool:
    """PE (on `primary`, the spec's by default) lists `replica` (the spec's) in
    `ha_enabled_replicas` (PE Infrastructure): `enable replica` ran.

    Not the agents' server_list: that is what the failover checks test, not what enable records.
    """
    with lab.pe(primary) as pe:
        group = pe.group_by_name("PE Infrastructure")
    enabled = group.get("classes", {}).get("puppet_enterprise", {}).get("ha_enabled_replicas")
    return isinstance(enabled, list) and (replica or lab.spec.replica.name) in enabled


def ensure_replica_enabled(lab: Lab, *, wait_timeout: float = 1800) -> str:
    """Provision and enable the replica without prompts; finish with `enable` if provision raced.

    Done is what PE records (`ha_enabled_replicas`), read again after the commands: their exit
    code is no proof (peadm PR #258)."""
    replica = lab.spec.replica.name
    if replica_enabled(lab):
        return "already enabled"
    common = ["--topology", "mono", "--yes", "--token-file", paths.ADMIN_TOKEN, "--color", "false"]
    primary = lab.host(lab.spec.primary.name)
    provisioned = any(s.server == replica for s in infra_status(lab))
    outcome = "enabled"
    try:
        if not provisioned:
            primary.run(
                ["puppet", "infrastructure", "provision", "replica", replica, "--enable", *common],
                root=True,
                timeout=3600,
            )
            outcome = "provisioned and enabled"
    except CommandFailed:
        # PE's known race: provisioned, then enable saw PuppetDB still starting.
        if not any(s.server == replica for s in infra_status(lab)):
            raise
    if outcome == "enabled":
        wait_until(
            lambda: True if _replica_services_running(lab) else None,
            timeout=wait_timeout,
            interval=5,
            what=f"the services on {replica} to run",
        )
        primary.run(
            ["puppet", "infrastructure", "enable", "replica", replica, *common],
            root=True,
            timeout=3600,
        )
    if not replica_enabled(lab):
        raise TransientError(
            f"`puppet infrastructure {'provision' if outcome != 'enabled' else 'enable'} replica` "
            f"exited 0 but PE's ha_enabled_replicas does not list {replica}"
        )
    return outcome


def _replica_services_running(lab: Lab) -> bool:
    mine = [s for s in infra_status(lab) if s.server == lab.spec.replica.name]
    return bool(mine) and all(s.state == "running" for s in mine)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class KeyCopy:
    path: str
    sha256_prefix: str
    action: str


def remote_sha256(lab: Lab, vm: str, path: str) -> str | None:
    out = lab.host(vm).run(["sha256sum", path], root=True, ok_codes=(0, 1))
    return out.stdout.split()[0] if out.exit_code == 0 and out.stdout.strip() else None


def remote_owner(lab: Lab, vm: str, path: str) -> str:
    return lab.host(vm).run(["stat", "-c", "%a %U %G", path], root=True).stdout.strip()


def ensure_secret_keys_copied(lab: Lab) -> list[KeyCopy]:
    """The three secret key files and the r10k key on the replica: same content, PE's owners."""
    primary, replica = lab.spec.primary.name, lab.spec.replica.name
    files = [(p, owner, 0o640) for p, owner in paths.SECRET_KEY_FILES]
    files.append((paths.R10K_KEY, "pe-puppet", 0o600))
    copies = []
    for path, owner, mode in files:
        content = lab.host(primary).read(path, root=True)
        remember(content.decode(errors="replace"))
        digest = sha256(content)
        wanted_owner = f"{mode:o} {owner} {owner}"
        if remote_sha256(lab, replica, path) == digest and remote_owner(lab, replica, path) == (
            wanted_owner
        ):
            copies.append(KeyCopy(path, digest[:12], "already in place"))
            continue
        lab.host(replica).put(path, content, mode=mode, owner=owner, group=owner)
        if remote_sha256(lab, replica, path) != digest:
            raise TransientError(f"{path} on {replica} does not match the primary's after the copy")
        got = remote_owner(lab, replica, path)
        if got != wanted_owner:
            raise TransientError(f"{path} on {replica} is `{got}`, PE needs `{wanted_owner}`")
        copies.append(KeyCopy(path, digest[:12], "copied"))
    return copies


def agent_server_list(lab: Lab, agent: str) -> list[str]:
    out = lab.host(agent).run(
        ["puppet", "config", "print", "server_list", "--section", "agent"], root=True
    )
    return [s.strip() for s in out.stdout.strip().split(",") if s.strip()]


def ensure_agent_config_pushed(
    lab: Lab, *, timeout: float = 1800, interval: float = 2.0
) -> dict[str, list[str]]:
    """Agents know the replica: an orchestrator Puppet run on every node, as the tutorial does."""
    replica = lab.spec.replica.name
    hosts = [h.name for h in lab.spec.agents]
    lists = {h: agent_server_list(lab, h) for h in hosts}
    if all(any(s.split(":")[0] == replica for s in servers) for servers in lists.values()):
        return lists
    with lab.pe() as pe:
        job = pe.run_puppet(
            query=paths.ALL_NODES_QUERY,
            environment="",
            enforce_environment=False,
            description="pe-dr-drill: push the replica to agent configuration",
        )

        def finished() -> dict[str, object] | None:
            state = pe.job(job)
            return state if state.get("state") in {"finished", "failed", "stopped"} else None

        final = wait_until(
            finished, timeout=timeout, interval=interval, what=f"orchestrator job {job}"
        )
        failed = [n.get("name") for n in pe.job_nodes(job) if n.get("state") not in {"finished"}]
    if final.get("state") != "finished" or failed:
        raise TransientError(
            f"orchestrator job {job} ended {final.get('state')}; nodes not finished: "
            + (", ".join(str(f) for f in failed) or "none")
        )
    return {h: agent_server_list(lab, h) for h in hosts}
