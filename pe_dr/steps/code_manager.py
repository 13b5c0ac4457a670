"""The tutorial's step 1, Code Manager against a GitLab control repo: the r10k key and known hosts,
GitLab's token, settings, CA trust, deploy key and project, the control repo, PE Master's
parameters, the deploy user and token, code deploys and the push webhook.

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

import contextlib
import json
import secrets as pysecrets
from datetime import datetime
from importlib import resources

from pe_dr.errors import ApiError, CommandFailed, PreconditionError, TransientError
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.parsing.pe import KnownHost, parse_code_deploy, parse_ssh_keyscan
from pe_dr.polling import wait_until
from pe_dr.secrets import remember
from pe_dr.steps.primary_settings import puppet_access_login, token_valid
from pe_dr.steps.replica import remote_owner
from pe_dr.steps.vms import run_puppet

MASTER_PROFILE = "puppet_enterprise::profile::master"


GIT_SSH = (
    f"ssh -i {paths.R10K_KEY} -o IdentitiesOnly=yes "
    f"-o UserKnownHostsFile={paths.ROOT_KNOWN_HOSTS} -o StrictHostKeyChecking=yes"
)


GIT_IDENTITY = ["-c", "user.name=pe-dr-drill", "-c", "user.email=pe-dr-drill@localhost"]


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
    if token_valid(lab, server, paths.DEPLOY_TOKEN):
        return "valid"
    password = _strong_password()
    with lab.pe(server) as pe:
        user = pe.user_by_login(lab.spec.deploy_user)
        if user is None:
            raise PreconditionError(f"PE user {lab.spec.deploy_user!r} does not exist on {server}")
        pe.reset_password(pe.password_reset_token(user["id"]), password)
    puppet_access_login(lab, server, lab.spec.deploy_user, password, paths.DEPLOY_TOKEN)
    return "created"


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
    elif remote_owner(lab, lab.spec.primary.name, paths.R10K_KEY).split()[1:2] != ["pe-puppet"]:
        primary.run(["puppet", "infrastructure", "configure"], root=True, timeout=1800)
    # derived from the private key: a promoted replica got the key copied, not its .pub
    return primary.run(["ssh-keygen", "-y", "-f", paths.R10K_KEY], root=True).stdout.strip()


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


def git(*args: str) -> list[str]:
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
    """The control repo has a `production` branch on GitLab (a first push from the primary if
    not), and the primary has a clone of it at its head: after a promotion the new primary has
    none (the clone lived on the lost one), and the replication check commits there."""
    sha = remote_head(lab)
    primary = lab.host(lab.spec.primary.name)
    if sha:
        ssh = f"core.sshCommand={GIT_SSH}"
        if not primary.exists(paths.CONTROL_REPO_DIR + "/.git", root=True):
            branch, remote = lab.spec.environment, lab.spec.control_repo_remote
            primary.run(
                ["git", "-c", ssh, "clone", "--branch", branch, remote, paths.CONTROL_REPO_DIR],
                root=True,
                timeout=300,
            )
        elif primary.run(git("rev-parse", "HEAD"), root=True).stdout.strip() != sha:
            primary.run(
                git("-c", ssh, "pull", "--ff-only", "origin", lab.spec.environment),
                root=True,
                timeout=300,
            )
        return sha
    if not primary.exists(paths.CONTROL_REPO_DIR + "/.git", root=True):
        for name, content in _skeleton_files().items():
            mode = 0o755 if name.endswith(".sh") else 0o644
            primary.put(f"{paths.CONTROL_REPO_DIR}/{name}", content, mode=mode, owner="root")
        primary.run(git("init", "-b", lab.spec.environment), root=True)
        primary.run(git("remote", "add", "origin", lab.spec.control_repo_remote), root=True)
    primary.run(git("add", "-A"), root=True)
    git_commit(lab, "Control repo for the DR drill")
    push_control_repo(lab)
    return primary.run(git("rev-parse", "HEAD"), root=True).stdout.strip()


def git_commit(lab: Lab, message: str) -> bool:
    """Commit what is staged in the control repo on the primary; False when there was nothing to
    commit. Exit 1 counts as "nothing to commit" only when git says so."""
    out = lab.host(lab.spec.primary.name).run(
        git(*GIT_IDENTITY, "commit", "-m", message), root=True, ok_codes=(0, 1)
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
        git("-c", f"core.sshCommand={GIT_SSH}", "push", "origin", lab.spec.environment),
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


def live_commit(lab: Lab, vm: str) -> tuple[str | None, float | None]:
    """The commit deployed in the live code of `vm` and when (.r10k-deploy.json, reference §4.6):
    what the server compiles from, as opposed to what its file sync storage holds."""
    path = f"{paths.LIVE_CODE}/{lab.spec.environment}/.r10k-deploy.json"
    out = lab.host(vm).run(["cat", path], root=True, ok_codes=(0, 1))
    if out.exit_code != 0:
        return None, None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None, None
    when = None
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(str(data.get("finished_at")).replace("Z", "+00:00"))
    return (str(data.get("signature") or "") or None), (when.timestamp() if when else None)


def live_file(lab: Lab, vm: str, name: str) -> str:
    """A file of the environment's live code on `vm` ("" when it has none)."""
    path = f"{paths.LIVE_CODE}/{lab.spec.environment}/{name}"
    out = lab.host(vm).run(["cat", path], root=True, ok_codes=(0, 1))
    return out.stdout if out.exit_code == 0 else ""


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
            # global options before the action (`puppet-code [GLOBAL_OPTIONS] <ACTION>`: PE
            # manual p.810-813; real-world-findings §4.2 row 7); the service is named, not
            # taken from puppet-code.conf, which may name a destroyed primary
            "--service-url",
            f"https://{server}:8170/code-manager",
            "--token-file",
            paths.DEPLOY_TOKEN,
            "deploy",
            lab.spec.environment,
            "--wait",
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
