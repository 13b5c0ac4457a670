"""The tutorial's actions as idempotent "ensure" functions: look at the lab, act only if needed.

Plain Python over a Lab; the Prefect tasks in tasks/ wrap these one to one.
"""

from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TypeVar

from pe_dr import paths
from pe_dr.errors import (
    ApiError,
    CommandFailed,
    ConfigError,
    PreconditionError,
    TransientError,
    VagrantError,
)
from pe_dr.lab import Lab
from pe_dr.parsers import (
    KnownHost,
    ServiceStatus,
    parse_code_deploy,
    parse_infra_status,
    parse_ssh_keyscan,
)
from pe_dr.polling import Pacer
from pe_dr.secrets import PE_CONSOLE_PASSWORD, get_secret, remember
from pe_dr.virtualbox import require_host_only_addresses

T = TypeVar("T")

AGENT_PROFILE = "puppet_enterprise::profile::agent"
MASTER_PROFILE = "puppet_enterprise::profile::master"
GIT_SSH = (
    f"ssh -i {paths.R10K_KEY} -o IdentitiesOnly=yes "
    f"-o UserKnownHostsFile={paths.ROOT_KNOWN_HOSTS} -o StrictHostKeyChecking=yes"
)
GIT_IDENTITY = ["-c", "user.name=pe-dr-drill", "-c", "user.email=pe-dr-drill@localhost"]


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    what: str,
) -> T:
    """Poll `probe` until it returns a value; TransientError naming `what` when `timeout` passes.

    Probes start at a fixed rate (pe_dr.polling): within one interval of a change, never two
    within one interval."""
    pace = Pacer(interval, time.monotonic() + timeout, what=what)
    while True:
        value = probe()
        if value is not None:
            return value
        if not pace.wait():
            raise TransientError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- VMs -----------------------------------------------------------------------------------


def ensure_box(lab: Lab) -> str:
    """The lab's box is installed before any VM is created: parallel `vagrant up`s of a fresh
    lab would otherwise each import it and race on VirtualBox's locks (real-world-findings §1
    row 8). Only looks when a VM is yet to be created."""
    if "not_created" not in lab.vagrant.status().values():
        return "no VM to create"
    if any(name == lab.spec.box for name, _ in lab.vagrant.boxes()):
        return "present"
    require_host_only_addresses(lab.spec)
    try:
        lab.vagrant.box_add(lab.spec.box)
    except VagrantError as exc:
        if "already exists" not in exc.message:  # another run added it meanwhile
            raise
        return "present"
    return "added"


def ensure_vm_up(lab: Lab, vm: str) -> str:
    """Start `vm` unless it runs, then wait until it answers over SSH."""
    vm = lab.spec.host(vm).name
    state = lab.vagrant.state(vm)
    if state != "running":
        require_host_only_addresses(lab.spec)
        lab.vagrant.up(vm)
        lab.forget_host(vm)
    wait_until(
        lambda: True if _ssh_answers(lab, vm) else None,
        timeout=300,
        interval=1,
        what=f"{vm} to answer over SSH",
    )
    return "started" if state != "running" else "already running"


def _ssh_answers(lab: Lab, vm: str) -> bool:
    try:
        lab.host(vm).run(["true"], timeout=30)
        return True
    except (TransientError, CommandFailed, OSError):
        lab.forget_host(vm)
        return False


def require_confirmation(vm: str, confirm: list[str], action: str) -> None:
    """Refuse a destructive action unless the run named the VM it may break."""
    if vm not in confirm:
        raise PreconditionError(
            f"refusing to {action} {vm}: the run must name it in `confirm` "
            "(--yes on the command line)"
        )


def halt_vm(lab: Lab, vm: str, confirm: list[str]) -> None:
    vm = lab.spec.host(vm).name
    require_confirmation(vm, confirm, "halt")
    if lab.vagrant.state(vm) == "running":
        lab.forget_host(vm)
        lab.vagrant.halt(vm)


def destroy_vm(lab: Lab, vm: str, confirm: list[str]) -> None:
    vm = lab.spec.host(vm).name
    require_confirmation(vm, confirm, "destroy")
    if lab.vagrant.state(vm) != "not_created":
        lab.forget_host(vm)
        lab.vagrant.destroy(vm)


# --- tokens --------------------------------------------------------------------------------


def _token_valid(lab: Lab, server: str, token_file: str) -> bool:
    host = lab.host(server)
    if not host.exists(token_file, root=True):
        return False
    token = lab.token(server, token_file)
    with lab.pe(server, token_file=None) as pe:
        return pe.token_is_valid(token)


def puppet_access_login(lab: Lab, server: str, login: str, password: str, token_file: str) -> None:
    """`puppet access login` on `server`, the password on stdin; a refused password is permanent.

    The RBAC service is named explicitly: after a promotion the client-tools configuration may
    still name the destroyed primary (PE dr_configure, "Promote a replica", step 3)."""
    argv = ["puppet", "access", "login", "--username", login, "--lifetime", "360d"]
    argv += ["--token-file", token_file, "--service-url", f"https://{server}:4433/rbac-api"]
    try:
        lab.host(server).run(argv, root=True, stdin=password + "\n", timeout=120)
    except CommandFailed:
        with lab.pe(server, token_file=None) as pe:
            try:
                pe.login(login, password, lifetime="5m", label=None)
            except ApiError as exc:
                if exc.status == 401:
                    raise ConfigError(
                        f"PE on {server} rejected the password of {login!r} (check the Secret "
                        "block pe-console-password or PE_CONSOLE_PASSWORD)"
                        if login == lab.spec.console_admin
                        else f"PE on {server} rejected the password of {login!r}"
                    ) from None
        raise
    lab.host(server).run(["chmod", "600", token_file], root=True)


def ensure_admin_token(lab: Lab, server: str | None = None) -> str:
    """An admin RBAC token in its own token file on `server` (the primary by default)."""
    server = server or lab.spec.primary.name
    if _token_valid(lab, server, paths.ADMIN_TOKEN):
        return "valid"
    password = get_secret(PE_CONSOLE_PASSWORD)
    puppet_access_login(lab, server, lab.spec.console_admin, password, paths.ADMIN_TOKEN)
    return "created"


def _strong_password() -> str:
    # PE's default policy wants upper, lower, digit and special characters.
    return remember(pysecrets.token_urlsafe(18) + "aZ7+")


def ensure_deploy_user(lab: Lab, server: str | None = None) -> str:
    """The deploy user exists and holds the Code Deployers role."""
    with lab.pe(server) as pe:
        role = pe.role_by_name("Code Deployers")
        user = pe.user_by_login(lab.spec.deploy_user)
        if user is None:
            pe.create_user(
                lab.spec.deploy_user,
                email=f"{lab.spec.deploy_user}@pe-dr-drill.invalid",
                display_name="Code deployer (pe-dr-drill)",
                role_ids=[role["id"]],
            )
            return "created"
        if role["id"] not in user.get("role_ids", []):
            pe.add_users_to_role(role["id"], [user["id"]])
            return "role added"
    return "present"


def ensure_deploy_token(lab: Lab, server: str | None = None) -> str:
    """A deploy-user token in its own token file; a fresh password is set through a reset token."""
    server = server or lab.spec.primary.name
    if _token_valid(lab, server, paths.DEPLOY_TOKEN):
        return "valid"
    password = _strong_password()
    with lab.pe(server) as pe:
        user = pe.user_by_login(lab.spec.deploy_user)
        if user is None:
            raise PreconditionError(f"PE user {lab.spec.deploy_user!r} does not exist on {server}")
        pe.reset_password(pe.password_reset_token(user["id"]), password)
    puppet_access_login(lab, server, lab.spec.deploy_user, password, paths.DEPLOY_TOKEN)
    return "created"


# --- agent profile, r10k key, known hosts ----------------------------------------------------


def agent_profile(lab: Lab, group: str = "PE Infrastructure Agent") -> dict[str, object]:
    with lab.pe() as pe:
        found = pe.group_by_name(group)
    return dict(found.get("classes", {}).get(AGENT_PROFILE, {}))


def ensure_agent_profile(lab: Lab) -> dict[str, object]:
    """PE Infrastructure Agent manages puppet.conf and lists the primary first (tutorial step 2)."""
    params = agent_profile(lab)
    primary = f"{lab.spec.primary.name}:8140"
    problems = []
    if params.get("manage_puppet_conf") is not True:
        problems.append("manage_puppet_conf is not true")
    for key in ("server_list", "primary_uris"):
        value = params.get(key)
        if not isinstance(value, list) or not value or value[0] != primary:
            problems.append(f"{key} does not start with {primary}")
    if problems:
        raise PreconditionError(
            "PE Infrastructure Agent's puppet_enterprise::profile::agent is not as PE sets it up: "
            + "; ".join(problems)
        )
    return params


def ensure_r10k_key(lab: Lab) -> str:
    """Code Manager's SSH key on the primary, made readable by `puppet infrastructure configure`
    (PDF-2021.7.1 p.111). Done means the key exists and pe-puppet owns it: a key whose run died
    before configure is configured on the next attempt, not taken as done."""
    primary = lab.host(lab.spec.primary.name)
    if not primary.exists(paths.R10K_KEY, root=True):
        primary.run(["mkdir", "-p", paths.R10K_KEY.rsplit("/", 1)[0]], root=True)
        primary.run(
            [
                "ssh-keygen",
                "-t",
                "rsa",
                "-b",
                "2048",
                "-N",
                "",
                "-C",
                "pe-dr",
                "-f",
                paths.R10K_KEY,
            ],
            root=True,
            timeout=120,
        )
        primary.run(["puppet", "infrastructure", "configure"], root=True, timeout=1800)
    elif _remote_owner(lab, lab.spec.primary.name, paths.R10K_KEY).split()[1:2] != ["pe-puppet"]:
        primary.run(["puppet", "infrastructure", "configure"], root=True, timeout=1800)
    return primary.read(paths.R10K_KEY + ".pub", root=True).decode().strip()


def ensure_known_hosts(lab: Lab) -> list[KnownHost]:
    """GitLab's SSH host keys in root's known_hosts on the primary, and returned for r10k."""
    primary = lab.host(lab.spec.primary.name)
    gitlab = lab.spec.gitlab.name
    scan = primary.run(["ssh-keyscan", "-t", "rsa,ed25519", gitlab], timeout=60)
    keys = [k for k in parse_ssh_keyscan(scan.stdout) if k.name == gitlab]
    if not keys:
        raise TransientError(f"ssh-keyscan on the primary found no host key for {gitlab}")
    existing = b""
    if primary.exists(paths.ROOT_KNOWN_HOSTS, root=True):
        existing = primary.read(paths.ROOT_KNOWN_HOSTS, root=True)
    kept = [line for line in existing.decode().splitlines() if line.split(" ", 1)[0] != gitlab]
    wanted = "\n".join([*kept, *(f"{k.name} {k.type} {k.key}" for k in keys)]) + "\n"
    if wanted.encode() != existing:
        primary.put(paths.ROOT_KNOWN_HOSTS, wanted.encode(), mode=0o644, owner="root", group="root")
    return keys


# --- GitLab --------------------------------------------------------------------------------

# The script reads the token from a file, so the token is never on a command line.
_GITLAB_BOOTSTRAP_RB = """\
token = User.find_by_username('root').personal_access_tokens.create(scopes: ['api'], \
name: 'pe-dr-drill', expires_at: 365.days.from_now)
token.set_token(File.read('{path}').strip)
token.save!
"""


def ensure_gitlab_api_token(lab: Lab) -> str:
    """A GitLab API token for root, made with gitlab-rails; it never touches a command line."""
    token = lab.gitlab_token()
    if token is not None:
        with lab.gitlab(token) as gl:
            try:
                gl.current_user()
                return "valid"
            except ApiError as exc:
                if exc.status != 401:
                    raise
    host = lab.host(lab.spec.gitlab.name)
    token = remember("glpat-" + pysecrets.token_urlsafe(20))
    host.put(paths.GITLAB_API_TOKEN, token.encode() + b"\n", mode=0o600, owner="root", group="root")
    script = _GITLAB_BOOTSTRAP_RB.format(path=paths.GITLAB_API_TOKEN).encode()
    host.put(paths.GITLAB_TOKEN_SCRIPT, script, mode=0o600, owner="root", group="root")
    try:
        host.run(["gitlab-rails", "runner", paths.GITLAB_TOKEN_SCRIPT], root=True, timeout=900)
    finally:
        host.run(["rm", "-f", paths.GITLAB_TOKEN_SCRIPT], root=True)
    with lab.gitlab(token) as gl:
        gl.current_user()
    return "created"


def ensure_gitlab_settings(lab: Lab) -> str:
    """Let GitLab call Code Manager on the lab network (the tutorial's admin network settings)."""
    wanted = {
        "allow_local_requests_from_web_hooks_and_services": True,
        "dns_rebinding_protection_enabled": False,
    }
    with lab.gitlab() as gl:
        current = gl.application_settings()
        if all(current.get(k) == v for k, v in wanted.items()):
            return "already set"
        gl.update_application_settings(**wanted)
    return "updated"


def split_certificates(bundle: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM (PE's ca.pem holds the root and the
    intermediate CA since PE 2019.0)."""
    end = b"-----END CERTIFICATE-----"
    found = []
    for part in bundle.split(end):
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            found.append(part[start:] + end + b"\n")
    return found


def ensure_gitlab_trusts_lab_ca(lab: Lab) -> str:
    """GitLab trusts the PE CA chain so that the push webhook verifies Code Manager's certificate.

    Each certificate of the bundle gets its own file in /etc/gitlab/trusted-certs: omnibus GitLab
    links one certificate per file, and several releases skip a file holding more than one
    (omnibus-gitlab MRs !8306, !8711; real-world-findings §1 row 2)."""
    certs = split_certificates(lab.ca_pem())
    if not certs:
        raise PreconditionError(f"{paths.CA_CERT} on {lab.spec.primary.name} holds no certificate")
    host = lab.host(lab.spec.gitlab.name)
    wanted = {
        f"{paths.GITLAB_TRUSTED_CA_PREFIX}-{i}.crt": pem for i, pem in enumerate(certs, start=1)
    }
    present = set()
    if host.exists(paths.GITLAB_TRUSTED_CERTS, root=True):
        listing = host.run(["ls", "-1", paths.GITLAB_TRUSTED_CERTS], root=True).stdout
        present = {n.strip() for n in listing.splitlines() if n.strip()}
    ours = {n for n in present if n.startswith(paths.GITLAB_TRUSTED_CA_PREFIX)}
    stale = sorted(ours - set(wanted))  # e.g. the whole bundle in one file, from an old release
    changed = bool(stale)
    for name, pem in wanted.items():
        path = f"{paths.GITLAB_TRUSTED_CERTS}/{name}"
        if name in present and host.read(path, root=True) == pem:
            continue
        host.put(path, pem, mode=0o644, owner="root", group="root")
        changed = True
    if stale:
        host.run(["rm", "-f", *(f"{paths.GITLAB_TRUSTED_CERTS}/{n}" for n in stale)], root=True)
    if not changed:
        return "already trusted"
    host.run(["gitlab-ctl", "reconfigure"], root=True, timeout=1800)
    return f"installed {len(wanted)} certificates"


def _key_body(public_key: str) -> str:
    return " ".join(public_key.split()[:2])


def ensure_gitlab_ssh_key(lab: Lab, public_key: str) -> str:
    with lab.gitlab() as gl:
        if any(_key_body(k.get("key", "")) == _key_body(public_key) for k in gl.user_keys()):
            return "present"
        gl.add_user_key(f"pe-dr-drill r10k ({lab.spec.primary.name})", public_key)
    return "added"


def ensure_control_repo_project(lab: Lab) -> int:
    with lab.gitlab() as gl:
        project = gl.project(lab.spec.control_repo)
        if project is None:
            project = gl.create_project(lab.spec.control_repo.split("/", 1)[1])
        return int(project["id"])


def _git(*args: str) -> list[str]:
    return ["git", "-C", paths.CONTROL_REPO_DIR, *args]


def remote_head(lab: Lab) -> str | None:
    """The commit of the environment branch on GitLab, or None when it does not exist yet."""
    branch = f"refs/heads/{lab.spec.environment}"
    out = lab.host(lab.spec.primary.name).run(
        [
            "git",
            "-c",
            f"core.sshCommand={GIT_SSH}",
            "ls-remote",
            lab.spec.control_repo_remote,
            branch,
        ],
        root=True,
        timeout=120,
    )
    for line in out.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.strip() == branch:
            return sha.strip()
    return None


def _skeleton_files() -> dict[str, bytes]:
    root = resources.files("pe_dr") / "control_repo"
    files: dict[str, bytes] = {}

    def walk(node: object, prefix: str) -> None:
        for child in node.iterdir():  # type: ignore[attr-defined]
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            else:
                files[name] = child.read_bytes()

    walk(root, "")
    return files


def ensure_control_repo_pushed(lab: Lab) -> str:
    """The control repo has a `production` branch on GitLab; first push from the primary if not."""
    sha = remote_head(lab)
    if sha:
        return sha
    primary = lab.host(lab.spec.primary.name)
    if not primary.exists(paths.CONTROL_REPO_DIR + "/.git", root=True):
        for name, content in _skeleton_files().items():
            mode = 0o755 if name.endswith(".sh") else 0o644
            primary.put(f"{paths.CONTROL_REPO_DIR}/{name}", content, mode=mode, owner="root")
        primary.run(_git("init", "-b", lab.spec.environment), root=True)
        primary.run(_git("remote", "add", "origin", lab.spec.control_repo_remote), root=True)
    primary.run(_git("add", "-A"), root=True)
    git_commit(lab, "Control repo for the DR drill")
    push_control_repo(lab)
    return primary.run(_git("rev-parse", "HEAD"), root=True).stdout.strip()


def git_commit(lab: Lab, message: str) -> bool:
    """Commit what is staged in the control repo on the primary; False when there was nothing to
    commit. Exit 1 counts as "nothing to commit" only when git says so."""
    out = lab.host(lab.spec.primary.name).run(
        _git(*GIT_IDENTITY, "commit", "-m", message), root=True, ok_codes=(0, 1)
    )
    if out.exit_code == 0:
        return True
    if "nothing to commit" in out.stdout + out.stderr:
        return False
    raise CommandFailed(
        lab.spec.primary.name, "git commit", out.exit_code, out.stdout, out.stderr, transient=False
    )


def push_control_repo(lab: Lab) -> None:
    lab.host(lab.spec.primary.name).run(
        _git("-c", f"core.sshCommand={GIT_SSH}", "push", "origin", lab.spec.environment),
        root=True,
        timeout=300,
    )


def ensure_pe_master_params(lab: Lab, known_hosts: list[KnownHost]) -> str:
    """PE Master's Code Manager parameters, applied by a Puppet run on the primary."""
    wanted: dict[str, object] = {
        "code_manager_auto_configure": True,
        "r10k_remote": lab.spec.control_repo_remote,
        "r10k_private_key": paths.R10K_KEY,
        "r10k_known_hosts": [{"name": k.name, "type": k.type, "key": k.key} for k in known_hosts],
        "replication_mode": "none",
    }
    changed = False
    with lab.pe() as pe:
        group = pe.group_by_name("PE Master")
        current = group.get("classes", {}).get(MASTER_PROFILE, {})
        if any(current.get(k) != v for k, v in wanted.items()):
            pe.update_group(group["id"], {"classes": {MASTER_PROFILE: wanted}})
            changed = True
    if changed or not code_manager_answers(lab):
        run_puppet(lab, lab.spec.primary.name)
        wait_until(
            lambda: True if code_manager_answers(lab) else None,
            timeout=600,
            interval=2,
            what="Code Manager to answer on the primary",
        )
    return "applied" if changed else "already set"


def code_manager_answers(lab: Lab, server: str | None = None) -> bool:
    server = server or lab.spec.primary.name
    if not lab.accepts_tcp(server, 8170):
        return False
    try:
        with lab.pe(server) as pe:
            pe.deploys_status()
        return True
    except TransientError:
        return False


def start_vm(lab: Lab, vm: str) -> float:
    """Start `vm` again; the epoch time it answered (the start of the failback clock)."""
    ensure_vm_up(lab, vm)
    return time.time()


def start_primary(lab: Lab) -> str:
    """The primary up again ("already running" when it was)."""
    return ensure_vm_up(lab, lab.spec.primary.name)


def converge_agents(lab: Lab) -> dict[str, str]:
    """A Puppet run on every agent, so that each takes the new primary's configuration."""
    for agent in lab.spec.agents:
        run_puppet(lab, agent.name)
    return {a.name: "ran" for a in lab.spec.agents}


def run_puppet(lab: Lab, vm: str, *, noop: bool = False) -> str:
    argv = ["puppet", "agent", "-t"] + (["--noop"] if noop else [])
    return lab.host(vm).run(argv, root=True, ok_codes=(0, 2), timeout=1800).stdout


def deployed_signature(lab: Lab, server: str | None = None) -> str | None:
    """The commit Code Manager's file sync storage on `server` holds for the environment
    (GET /code-manager/v1/deploys/status, `file-sync-storage-status.deployed`), or None."""
    with lab.pe(server) as pe:
        status = pe.deploys_status()
    deployed = (status.get("file-sync-storage-status") or {}).get("deployed") or []
    for entry in deployed:
        if isinstance(entry, dict) and entry.get("environment") == lab.spec.environment:
            return str(entry.get("deploy-signature") or "") or None
    return None


def ensure_code_deployed(lab: Lab, server: str | None = None) -> str:
    """The control repo's head on GitLab is deployed on `server`: nothing to do when Code
    Manager's file sync storage already holds it, else `deploy_code`."""
    head = remote_head(lab)
    if head is not None and deployed_signature(lab, server) == head:
        return head
    return deploy_code(lab, server)


def deploy_code(lab: Lab, server: str | None = None) -> str:
    """`puppet-code deploy production --wait` with the deploy token; returns the deployed commit.
    It always deploys: after a promotion, this is the proof that Code Manager works there."""
    server = server or lab.spec.primary.name
    out = lab.host(server).run(
        [
            "puppet-code",
            "deploy",
            lab.spec.environment,
            "--wait",
            "--token-file",
            paths.DEPLOY_TOKEN,
            # named, not taken from puppet-code.conf, which may name a destroyed primary
            "--service-url",
            f"https://{server}:8170/code-manager",
        ],
        root=True,
        timeout=1800,
    )
    results = [r for r in parse_code_deploy(out.stdout) if r.environment == lab.spec.environment]
    if not results or results[0].status != "complete":
        detail = results[0].error if results else "no result for the environment"
        raise TransientError(
            f"Code Manager on {server} did not deploy {lab.spec.environment}: {detail}"
        )
    return results[0].deploy_signature or ""


def webhook_url(lab: Lab, server: str, token: str) -> str:
    return f"https://{server}:8170/code-manager/v1/webhook?type=gitlab&token={token}"


def ensure_webhook(lab: Lab, project_id: int, server: str | None = None) -> int:
    """GitLab's one push hook to Code Manager points at `server`, with the current deploy token
    and TLS verification on; any other Code Manager hook (one left pointing at a destroyed
    primary, or with a revoked token) is removed, or its pushes would fail or deploy twice."""
    server = server or lab.spec.primary.name
    url = webhook_url(lab, server, lab.token(server, paths.DEPLOY_TOKEN))
    with lab.gitlab() as gl:
        hooks = [h for h in gl.hooks(project_id) if "/code-manager/v1/webhook" in h.get("url", "")]
        keep = next(
            (
                h
                for h in hooks
                if h.get("url") == url and h.get("push_events") and h.get("enable_ssl_verification")
            ),
            None,
        )
        if keep is None and hooks:
            keep = gl.update_hook(project_id, hooks[0]["id"], url, push_events=True)
            keep.setdefault("id", hooks[0]["id"])
        elif keep is None:
            keep = gl.add_hook(project_id, url, push_events=True, enable_ssl_verification=True)
        for other in hooks:
            if int(other["id"]) != int(keep["id"]):
                gl.delete_hook(project_id, int(other["id"]))
        return int(keep["id"])


# --- replica -------------------------------------------------------------------------------


def infra_status(lab: Lab, server: str | None = None) -> list[ServiceStatus]:
    out = lab.host(server or lab.spec.primary.name).run(
        ["puppet", "infrastructure", "status", "--format=json"],
        root=True,
        ok_codes=(0, 1),
        timeout=300,
    )
    return parse_infra_status(out.stdout)


def replica_enabled(lab: Lab) -> bool:
    """PE lists the replica in `ha_enabled_replicas` (PE Infrastructure): `enable replica` ran.

    Not the agents' server_list: that is what the failover checks test, not what enable records.
    """
    with lab.pe() as pe:
        group = pe.group_by_name("PE Infrastructure")
    enabled = group.get("classes", {}).get("puppet_enterprise", {}).get("ha_enabled_replicas")
    return isinstance(enabled, list) and lab.spec.replica.name in enabled


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


def _remote_sha256(lab: Lab, vm: str, path: str) -> str | None:
    out = lab.host(vm).run(["sha256sum", path], root=True, ok_codes=(0, 1))
    return out.stdout.split()[0] if out.exit_code == 0 and out.stdout.strip() else None


def _remote_owner(lab: Lab, vm: str, path: str) -> str:
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
        if _remote_sha256(lab, replica, path) == digest and _remote_owner(lab, replica, path) == (
            wanted_owner
        ):
            copies.append(KeyCopy(path, digest[:12], "already in place"))
            continue
        lab.host(replica).put(path, content, mode=mode, owner=owner, group=owner)
        if _remote_sha256(lab, replica, path) != digest:
            raise TransientError(f"{path} on {replica} does not match the primary's after the copy")
        got = _remote_owner(lab, replica, path)
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


# --- promotion -----------------------------------------------------------------------------


def promote_replica(lab: Lab) -> str:
    """`puppet infrastructure promote replica` on the replica, only once the primary is gone.

    PE requires the old primary to be permanently offline (PDF-2021.7.1 p.280) and the command
    does not check it, so the drill does: vagrant must not run it and its Puppet Server must not
    answer. Whether the replica is already the primary is read from PE itself (its services),
    not from a port that an enabled replica opens too."""
    replica, primary = lab.spec.replica.name, lab.spec.primary.name
    state = lab.vagrant.state(primary)
    seen = lab.probe_puppetserver(primary)
    if state == "running" or seen == "answering":
        raise PreconditionError(
            f"refusing to promote {replica}: {primary} is {state} and its Puppet Server on 8140 "
            f"is {seen}; PE requires the old primary to be permanently offline"
        )
    if is_primary(lab, replica):
        return "already promoted"
    lab.host(replica).run(
        [
            "puppet",
            "infrastructure",
            "promote",
            "replica",
            "--topology",
            "mono",
            "--yes",
            "--color",
            "false",
        ],
        root=True,
        timeout=7200,
    )
    if not is_primary(lab, replica):
        raise TransientError(f"`promote replica` finished but {replica} does not serve as primary")
    return "promoted"


def is_primary(lab: Lab, server: str) -> bool:
    """Whether PE runs `server` as its primary: only the primary runs the file sync storage
    service, which its Puppet Server status lists (GET :8140/status/v1/services, as peadm's
    tasks/code_sync_status.rb reads it); a replica runs only the file sync client."""
    try:
        with lab.pe(server, token_file=None) as pe:
            services = pe.services(8140)
    except TransientError:
        return False
    storage = services.get("file-sync-storage-service")
    return isinstance(storage, dict) and storage.get("state") == "running"


CLIENT_TOOLS_DIR = "/etc/puppetlabs/client-tools"
CLIENT_TOOLS = {
    "puppet-access.conf": ("service-url", 4433, "/rbac-api"),
    "puppet-code.conf": ("service-url", 8170, "/code-manager"),
    "orchestrator.conf": ("options.service-url", 8143, ""),
}


def ensure_client_tools_point_at(lab: Lab, server: str) -> list[str]:
    """PE's global client-tools configuration on `server` names `server` itself: promotion leaves
    it naming the old primary, and PE's procedure says to update it (PE 2019.7-2021.7
    dr_configure, "Promote a replica", step 3; help.puppet.com "Configuring and using PE client
    tools"). Returns the files rewritten."""
    host = lab.host(server)
    changed = []
    for name, (key, port, path) in CLIENT_TOOLS.items():
        file = f"{CLIENT_TOOLS_DIR}/{name}"
        if not host.exists(file, root=True):
            continue
        try:
            data = json.loads(host.read(file, root=True))
        except ValueError:
            raise PreconditionError(f"{file} on {server} is not JSON") from None
        wanted = f"https://{server}:{port}{path}"
        holder = data.setdefault("options", {}) if key.startswith("options.") else data
        if holder.get("service-url") == wanted:
            continue
        holder["service-url"] = wanted
        text = json.dumps(data, indent=2) + "\n"
        host.put(file, text.encode(), mode=0o644, owner="root", group="root")
        changed.append(file)
    return changed


def forget_old_primary(lab: Lab) -> str:
    """`puppet infrastructure forget` of the old primary, on the new one. "Already forgotten" is
    read from PE (PuppetDB on the new primary no longer lists it as active, GET
    /pdb/query/v4/nodes), never from an exit code: forget exits non-zero for many reasons
    (peadm spec/acceptance/peadm_spec/plans/perform_failover.pp; real-world-findings §1 row 7)."""
    replica, old = lab.spec.replica.name, lab.spec.primary.name
    if not _active_node(lab, replica, old):
        return "already forgotten"
    lab.host(replica).run(
        ["puppet", "infrastructure", "forget", old, "--token-file", paths.ADMIN_TOKEN],
        root=True,
        timeout=1800,
    )
    if _active_node(lab, replica, old):
        raise TransientError(f"`puppet infrastructure forget {old}` finished but PuppetDB lists it")
    return "forgotten"


def _active_node(lab: Lab, server: str, certname: str) -> bool:
    with lab.pe(server) as pe:
        nodes = pe.pdb_query("nodes", ["=", "certname", certname])
    return any(
        n.get("certname") == certname and not n.get("deactivated") and not n.get("expired")
        for n in nodes
    )


def require_lab_state(
    lab: Lab,
    flow: str,
    *,
    running: tuple[str, ...] = (),
    code_manager: bool = False,
    replica: bool = False,
) -> str:
    """Refuse, in one sentence, to run `flow` on a lab that is not in the state it needs."""
    states = lab.vagrant.status()
    for name in running:
        vm = lab.spec.host(name).name
        if states.get(vm) != "running":
            raise PreconditionError(
                f"{flow} needs {vm} running but it is {states.get(vm, 'unknown')}: "
                "run lab_setup first"
            )
    if code_manager and not code_manager_answers(lab):
        raise PreconditionError(
            f"{flow} needs Code Manager on {lab.spec.primary.name}: run code_manager_setup first"
        )
    if replica and not replica_enabled(lab):
        raise PreconditionError(
            f"{flow} needs {lab.spec.replica.name} enabled as a replica: "
            "run replica_activation first"
        )
    return "ready"


def restore_primary(lab: Lab) -> str | None:
    """Start the primary if a drill left it halted (a crash mid-failover); None if it was not."""
    primary = lab.spec.primary.name
    state = lab.vagrant.state(primary)
    if state in {"running", "not_created"}:
        return None
    ensure_vm_up(lab, primary)
    return f"{primary} was {state}; started it again so the lab is whole"
