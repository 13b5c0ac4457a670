"""Test-side driver of a labsim lab: SSH (paramiko), vagrant, HTTPS (httpx) and the tutorial's
setup steps. Test code, not product code."""

from __future__ import annotations

import io
import json
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import paramiko

from labsim.testing import LabHandle
from pe_dr.lab.spec import load_spec

R10K_KEY = "/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa"
REPO = "/root/repo/control-repo"


LABSIM = [sys.executable, "-m", "labsim.cli"]


def labsim(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A `labsim` command line, its output captured."""
    return subprocess.run(
        [*LABSIM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def refused(address: str, port: int) -> bool:
    """Whether a TCP connection to `address:port` is refused (no listener)."""
    try:
        socket.create_connection((address, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def ops(journal: list[dict], op: str, vm: str | None = None) -> list[dict]:
    """The journal's entries of `op` (on `vm`)."""
    return [e for e in journal if e["op"] == op and (vm is None or e["vm"] == vm)]


SSH_CMD = (
    f"ssh -i {R10K_KEY} -o IdentitiesOnly=yes -o UserKnownHostsFile=/root/.ssh/known_hosts "
    "-o StrictHostKeyChecking=yes"
)


class Driver:
    def __init__(self, handle: LabHandle) -> None:
        self.h = handle
        self.spec = load_spec(handle.spec_path)
        self.addr = self.spec.address_map
        self.key = paramiko.Ed25519Key.from_private_key_file(
            str(handle.state_dir / "insecure_private_key")
        )
        self.ca = handle.state_dir / "ca" / "ca.pem"
        self.admin_token: str | None = None
        self.deploy_token: str | None = None
        self.gitlab_token: str | None = None

    # -- transports ----------------------------------------------------------------------------
    def vagrant(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["vagrant", *args],
            capture_output=True,
            text=True,
            check=check,
            env=self.h.environ(),
            cwd=self.h.state_dir,
            timeout=60,
        )

    def _client(self, vm: str) -> paramiko.SSHClient:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
        port = int(self.ssh_config(vm)["Port"])
        c.connect(
            self.addr[vm],
            port=port,
            username="vagrant",
            pkey=self.key,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        return c

    def ssh_config(self, vm: str) -> dict[str, str]:
        out = self.vagrant("ssh-config", vm).stdout
        conf = {}
        for line in out.splitlines()[1:]:
            if line.strip():
                k, v = line.strip().split(None, 1)
                conf[k] = v
        return conf

    def ssh(
        self, vm: str, argv: list[str] | str, stdin: str | None = None, root: bool = True
    ) -> tuple[int, str, str]:
        if isinstance(argv, str):
            argv = shlex.split(argv)
        cmd = shlex.join((["sudo", "-n", "-i"] if root else []) + argv)
        c = self._client(vm)
        try:
            si, so, se = c.exec_command(cmd, timeout=60)
            if stdin is not None:
                si.write(stdin)
            si.channel.shutdown_write()
            out = so.read().decode()
            err = se.read().decode()
            rc = so.channel.recv_exit_status()
        finally:
            c.close()
        return rc, out, err

    def ok(self, vm: str, argv: list[str] | str, stdin: str | None = None) -> str:
        rc, out, err = self.ssh(vm, argv, stdin)
        assert rc in (0, 2), f"{argv} on {vm} failed rc={rc}: {out}\n{err}"
        return out

    def put(self, vm: str, path: str, data: str | bytes, mode: int = 0o600) -> None:
        """SFTP to the vagrant home, then install as root."""
        c = self._client(vm)
        tmp = f"/home/vagrant/.labsim-{secrets.token_hex(4)}"
        try:
            sftp = c.open_sftp()
            sftp.putfo(io.BytesIO(data.encode() if isinstance(data, str) else data), tmp)
            sftp.chmod(tmp, 0o600)
            sftp.close()
        finally:
            c.close()
        self.ok(vm, ["mkdir", "-p", str(Path(path).parent)])
        self.ok(vm, ["install", "-m", format(mode, "o"), tmp, path])
        self.ok(vm, ["rm", "-f", tmp])

    def http(
        self,
        vm: str,
        port: int,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        name: str | None = None,
        cert: str | None = None,
    ) -> httpx.Response:
        """One HTTPS request; `cert` names the VM whose host certificate to present (PE's own
        servers' certnames are allowlisted; a token is checked by the primary's RBAC)."""
        headers = {"X-Authentication": token} if token else {}
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            keys = self.h.state_dir / "vms" / cert / "keys"
            context.load_cert_chain(keys / "cert.pem", keys / "key.pem")
        with httpx.Client(verify=context, timeout=30) as c:
            return c.request(
                method,
                f"https://{self.addr[vm]}:{port}{path}",
                headers=headers,
                json=json_body,
                extensions={"sni_hostname": name or vm},
            )

    def gitlab(self, method: str, path: str, **kw: Any) -> httpx.Response:
        port = self.spec.gitlab_http_port
        headers = {"PRIVATE-TOKEN": self.gitlab_token or "", **kw.pop("headers", {})}
        with httpx.Client(timeout=30) as c:
            return c.request(
                method,
                f"http://{self.addr['gitlab.vm']}:{port}/api/v4{path}",
                headers=headers,
                **kw,
            )

    # -- the tutorial ------------------------------------------------------------------------
    def up_all(self) -> None:
        # the box first: parallel first-run `vagrant up`s race on its import; then the primary
        # alone, which creates the host-only interface (parallel first runs duplicate it)
        self.vagrant("box", "add", "ubuntu/jammy64", "--provider", "virtualbox")
        self.vagrant("up", "primary.vm")
        procs = [
            subprocess.Popen(
                ["vagrant", "up", vm],
                env=self.h.environ(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for vm in ("gitlab.vm", "replica.vm", "linux.vm")
        ]
        for p in procs:
            assert p.wait(timeout=60) == 0

    def login(
        self, vm: str, user: str, password: str, token_file: str, service_url: str | None = None
    ) -> str:
        argv = ["puppet", "access", "login", "--lifetime", "360d"]
        argv += ["--username", user, "--token-file", token_file]
        if service_url:
            argv += ["--service-url", service_url]
        self.ok(vm, argv, stdin=password + "\n")
        return self.ok(vm, ["cat", token_file]).strip()

    def setup_gitlab(self) -> None:
        self.gitlab_token = "glpat-" + secrets.token_urlsafe(20)
        self.put("gitlab.vm", "/root/.pe-dr/api-token", self.gitlab_token + "\n")
        self.put(
            "gitlab.vm",
            "/root/.pe-dr/api-token.rb",
            "token = User.find_by_username('root').personal_access_tokens.create("
            "scopes: ['api'], name: 'pe-dr-drill', expires_at: 365.days.from_now)\n"
            "token.set_token(File.read('/root/.pe-dr/api-token').strip)\ntoken.save!\n",
        )
        self.ok("gitlab.vm", ["gitlab-rails", "runner", "/root/.pe-dr/api-token.rb"])

    def setup_code_manager(self, *, register_key: bool = True, webhook: bool = True) -> str:
        env = self.h.env
        self.admin_token = self.login(
            "primary.vm", "admin", env["PE_CONSOLE_PASSWORD"], "/root/.puppetlabs/admin_token"
        )
        self.ok(
            "primary.vm",
            ["ssh-keygen", "-t", "rsa", "-b", "2048", "-N", "", "-C", "pe-dr", "-f", R10K_KEY],
        )
        self.ok("primary.vm", ["puppet", "infrastructure", "configure"])
        self.setup_gitlab()
        pub = self.ok("primary.vm", ["cat", R10K_KEY + ".pub"]).strip()
        if register_key:
            r = self.gitlab("POST", "/user/keys", json={"title": "r10k", "key": pub})
            assert r.status_code == 201, r.text
        r = self.gitlab("POST", "/projects", json={"name": "control-repo"})
        assert r.status_code == 201, r.text
        project_id = r.json()["id"]
        scan = self.ok("primary.vm", ["ssh-keyscan", "-t", "rsa,ed25519", "gitlab.vm"])
        self.put("primary.vm", "/root/.ssh/known_hosts", scan, 0o644)
        self.ok("primary.vm", ["mkdir", "-p", REPO])
        self.put("primary.vm", f"{REPO}/Puppetfile", "forge 'https://forge.puppet.com'\n", 0o644)
        self.put("primary.vm", f"{REPO}/environment.conf", "modulepath = site:modules\n", 0o644)
        git = ["git", "-C", REPO]
        self.ok("primary.vm", [*git, "init", "-b", "production"])
        self.ok("primary.vm", [*git, "add", "-A"])
        self.ok(
            "primary.vm",
            [
                *git,
                "-c",
                "user.name=pe-dr",
                "-c",
                "user.email=pe-dr@lab",
                "commit",
                "-m",
                "initial",
            ],
        )
        self.ok(
            "primary.vm", [*git, "remote", "add", "origin", "git@gitlab.vm:root/control-repo.git"]
        )
        if not register_key:
            return ""
        self.ok(
            "primary.vm", [*git, "-c", f"core.sshCommand={SSH_CMD}", "push", "origin", "production"]
        )
        groups = self.http(
            "primary.vm", 4433, "GET", "/classifier-api/v1/groups", token=self.admin_token
        ).json()
        master = next(g for g in groups if g["name"] == "PE Master")
        known = []
        for line in scan.splitlines():
            name, typ, key = line.split()[:3]
            known.append({"name": name, "type": typ, "key": key})
        r = self.http(
            "primary.vm",
            4433,
            "POST",
            f"/classifier-api/v1/groups/{master['id']}",
            token=self.admin_token,
            json_body={
                "classes": {
                    "puppet_enterprise::profile::master": {
                        "code_manager_auto_configure": True,
                        "r10k_remote": "git@gitlab.vm:root/control-repo.git",
                        "r10k_private_key": R10K_KEY,
                        "r10k_known_hosts": known,
                    }
                }
            },
        )
        assert r.status_code == 200, r.text
        self.ok("primary.vm", ["puppet", "agent", "-t"])
        # deploy user
        r = self.http(
            "primary.vm",
            4433,
            "POST",
            "/rbac-api/v1/users",
            token=self.admin_token,
            json_body={"login": "deploy", "email": "deploy@lab", "display_name": "Deploy"},
        )
        assert r.status_code == 201, r.text
        users = self.http(
            "primary.vm", 4433, "GET", "/rbac-api/v1/users", token=self.admin_token
        ).json()
        uid = next(u["id"] for u in users if u["login"] == "deploy")
        roles = self.http(
            "primary.vm", 4433, "GET", "/rbac-api/v1/roles", token=self.admin_token
        ).json()
        rid = next(r["id"] for r in roles if r["display_name"] == "Code Deployers")
        r = self.http(
            "primary.vm",
            4433,
            "POST",
            "/rbac-api/v1/command/roles/add-users",
            token=self.admin_token,
            json_body={"role_id": rid, "user_ids": [uid]},
        )
        assert r.status_code == 204
        reset = self.http(
            "primary.vm",
            4433,
            "POST",
            f"/rbac-api/v1/users/{uid}/password/reset",
            token=self.admin_token,
        ).text
        deploy_pw = "Dp+" + secrets.token_urlsafe(12)
        r = self.http(
            "primary.vm",
            4433,
            "POST",
            "/rbac-api/v1/auth/reset",
            json_body={"token": reset, "password": deploy_pw},
        )
        assert r.status_code == 200, r.text
        self.deploy_token = self.login(
            "primary.vm", "deploy", deploy_pw, "/root/.puppetlabs/deploy_token"
        )
        out = self.ok(
            "primary.vm",
            [
                "puppet-code",
                "--token-file",
                "/root/.puppetlabs/deploy_token",
                "deploy",
                "production",
                "--wait",
            ],
        )
        assert "Found 1 environments." in out, out
        if webhook:
            r = self.gitlab(
                "PUT",
                "/application/settings",
                json={
                    "allow_local_requests_from_web_hooks_and_services": True,
                    "dns_rebinding_protection_enabled": False,
                },
            )
            assert r.status_code == 200
            r = self.gitlab(
                "POST",
                f"/projects/{project_id}/hooks",
                json={
                    "url": "https://primary.vm:8170/code-manager/v1/webhook?type=gitlab&token="
                    + self.deploy_token,
                    "push_events": True,
                    "enable_ssl_verification": False,
                },
            )
            assert r.status_code == 201, r.text
        return json.loads(out.split("\n", 1)[1])[0]["deploy-signature"]

    def agent_server_list(self, group: str = "PE Agent") -> list[str]:
        groups = self.http(
            "primary.vm", 4433, "GET", "/classifier-api/v1/groups", token=self.admin_token
        ).json()
        found = next(g for g in groups if g["name"] == group)
        return list(found["classes"]["puppet_enterprise::profile::agent"]["server_list"])

    def provision(self, enable: bool = True) -> tuple[int, str, str]:
        argv = [
            "puppet",
            "infrastructure",
            "provision",
            "replica",
            "replica.vm",
            "--topology",
            "mono",
            "--yes",
            "--token-file",
            "/root/.puppetlabs/admin_token",
            "--color",
            "false",
        ]
        if enable:
            argv.insert(5, "--enable")
        return self.ssh("primary.vm", argv)

    def commit_and_push(self, marker: str) -> str:
        old = self.ok("primary.vm", ["cat", f"{REPO}/Puppetfile"])
        self.put("primary.vm", f"{REPO}/Puppetfile", old + f"# {marker}\n", 0o644)
        git = ["git", "-C", REPO]
        self.ok("primary.vm", [*git, "add", "-A"])
        self.ok(
            "primary.vm",
            [*git, "-c", "user.name=pe-dr", "-c", "user.email=pe-dr@lab", "commit", "-m", marker],
        )
        self.ok(
            "primary.vm", [*git, "-c", f"core.sshCommand={SSH_CMD}", "push", "origin", "production"]
        )
        return self.ok("primary.vm", [*git, "rev-parse", "HEAD"]).strip()

    def last_commit(self, marker: str) -> str:
        """The sha of the control-repo commit whose message is `marker`."""
        out = self.ok("primary.vm", ["git", "-C", REPO, "log", "--format=%H %s", "-n", "20"])
        return next(line.split()[0] for line in out.splitlines() if line.endswith(f" {marker}"))

    def wait_for(self, what: str, check: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
