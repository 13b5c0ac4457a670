"""Code deployment: the control repository in GitLab, Code Manager's deploys to the primary's
file-sync storage, and file sync to the compile servers (the replica a little later)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import shutil
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from labsim.network import Network
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import VM
    from labsim.state import GitLabState

REPO_REL = "var/opt/gitlab/git-data/repositories"


class CodeDeploy(Network):
    gitlab: GitLabState | None
    children: set[int]
    _sync_seq: int
    _last_sync: asyncio.Task[Any] | None

    def repo_path(self, project_path: str) -> Path:
        return self.role_vm("gitlab").fs.root / REPO_REL / f"{project_path}.git"

    async def git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=str(cwd) if cwd else None,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.children.add(proc.pid)
        try:
            out, err = await proc.communicate(stdin)
        finally:
            self.children.discard(proc.pid)
        return proc.returncode or 0, out, err

    def r10k_problem(self, server: VM) -> str | None:
        """Why Code Manager on `server` cannot fetch the control repo, or None."""
        assert self.pe is not None
        params = self.pe.master_params()
        remote = params.get("r10k_remote")
        keypath = params.get("r10k_private_key")
        if not remote or not keypath:
            return "Code Manager is not configured: r10k_remote and r10k_private_key are required"
        gl_vm = self.role_vm("gitlab")
        if self.gitlab is None or not gl_vm.serving:
            return f"Unable to connect to {gl_vm.name}: Connection refused"
        try:
            key = asyncssh.import_private_key(server.fs.read(keypath))
        except (OSError, asyncssh.KeyImportError):
            return f"Failed to read private key {keypath}: No such file or directory"
        pub = key.export_public_key("openssh").decode().split()[1]
        if not any(k["key"].split()[1] == pub for k in self.gitlab.keys):
            return f"Permission denied (publickey) while fetching {remote}"
        known = params.get("r10k_known_hosts") or []
        host_pubs = {k.export_public_key("openssh").decode().split()[1] for k in gl_vm.host_keys}
        ok = any(
            isinstance(e, dict)
            and e.get("name") in (gl_vm.name, gl_vm.address)
            and e.get("key") in host_pubs
            for e in known
        )
        if not ok:
            return f"Host key verification failed for {gl_vm.name} (r10k_known_hosts)"
        path = remote.split(":", 1)[-1].removesuffix(".git")
        if self.gitlab.project(path) is None or not self.repo_path(path).exists():
            return f"Repository {remote} not found"
        return None

    async def deploy(self, server: VM, env: str, user: str) -> dict[str, Any]:
        """One Code Manager deploy on `server` (the current primary); waits for the primary."""
        assert self.pe is not None
        pe = self.pe
        pe.deploy_seq += 1
        did = pe.deploy_seq
        rec: dict[str, Any] = {
            "environment": env,
            "id": did,
            "status": "deploying",
            "queued-at": now_iso(),
        }
        pe.deploys[did] = rec
        await self.sleep(self.dur("deploy"), "api.code-manager")
        problem = self.r10k_problem(server)
        sha = ""
        if problem is None:
            remote = pe.master_params()["r10k_remote"]
            path = remote.split(":", 1)[-1].removesuffix(".git")
            bare = self.repo_path(path)
            rc, out, _ = await self.git(
                "--git-dir", str(bare), "rev-parse", "--verify", f"refs/heads/{env}"
            )
            if rc != 0:
                problem = f"Environment '{env}' not found in {remote} (no branch '{env}')"
            else:
                sha = out.decode().strip()
                rc, tar, _err = await self.git(
                    "--git-dir", str(bare), "archive", "--format=tar", sha
                )
                for base in (
                    "/etc/puppetlabs/code-staging/environments",
                    "/etc/puppetlabs/code/environments",
                ):
                    self.write_env(server, base, env, tar, sha)
        if problem is not None:
            rec.update(
                status="failed",
                error={
                    "kind": "puppetlabs.code-manager/deploy-failure",
                    "msg": f"Errors while deploying environment '{env}' (deploy failed): {problem}",
                    "details": {"corrected-name": env},
                },
            )
            self.journal(server.name, "code-manager.deploy", "failed", f"{env}: {problem}")
            return rec
        date = now_iso()
        pe.storage[env] = {"deploy-signature": sha, "date": date}
        pe.clients.setdefault(server.name, {})[env] = {"deploy-signature": sha, "date": date}
        rec.update(
            status="complete",
            **{
                "deploy-signature": sha,
                "file-sync": {
                    "environment-commit": secrets.token_hex(20),
                    "code-commit": secrets.token_hex(20),
                },
            },
        )
        self.journal(server.name, "code-manager.deploy", "ok", f"{env} {sha} by {user}")
        self.sync_replica()
        return rec

    def write_env(self, vm: VM, base: str, env: str, tar: bytes, sha: str) -> None:
        dest = vm.fs.host(f"{base}/{env}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(dest, filter="data")
        (dest / ".r10k-deploy.json").write_text(
            json.dumps(
                {
                    "name": env,
                    "signature": sha,
                    "started_at": now_iso(),
                    "finished_at": now_iso(),
                    "deploy_success": True,
                    "module_deploys": [],
                },
                indent=2,
            )
        )

    def sync_replica(self) -> None:
        """File sync of what the primary has deployed now, to the replica.

        The primary's code is snapshotted now and delivered after the lag (`replication:lag=N`,
        else about 5 modelled seconds), in order: each delivery waits for the one before it, so
        a later commit never reaches the replica before an earlier one, nor before its own lag.
        (PE file sync: the storage service commits, clients poll and fetch; PDF-2021.7.1
        p.830-831.)"""
        pe = self.pe
        if pe is None or not pe.replica or pe.promoted:
            return
        primary = self.vms[pe.primary]
        self._sync_seq += 1
        staged = self.dir / "filesync" / str(self._sync_seq)
        snapshot: dict[str, dict[str, str]] = {}
        for env, signature in pe.storage.items():
            src = primary.fs.host(f"/etc/puppetlabs/code/environments/{env}")
            if src.exists():
                shutil.copytree(src, staged / env, symlinks=True)
                snapshot[env] = dict(signature)
        before = self._last_sync
        self._last_sync = self.spawn(self._deliver(before, time.time(), staged, snapshot))

    def _sync_lag(self) -> float:
        lag = self.faults.lag()
        return lag if lag is not None else max(5.0 * self.scale, 0.2)

    async def _deliver(
        self,
        before: asyncio.Task[Any] | None,
        queued: float,
        staged: Path,
        snapshot: dict[str, dict[str, str]],
    ) -> None:
        try:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            started = time.time()
            # The lag is the replica's state now, not when the deploy was queued: once a slow
            # replica recovers (the fault is removed), its next poll fetches what is pending.
            while (left := queued + self._sync_lag() - time.time()) > 0:
                await asyncio.sleep(min(left, 0.1))
            delay = self._sync_lag()
            self.record_sleep(
                started, time.time(), delay / self.scale if self.scale else 0.0, "filesync"
            )
            pe = self.pe
            if pe is None or not pe.replica:
                return
            replica = self.vms[pe.replica]
            primary = self.vms[pe.primary]
            if self.faults.has("replication-broken") or self.fault("filesync", replica.name):
                self.journal(
                    replica.name, "filesync", "failed", "file sync did not reach the replica"
                )
                return
            if not replica.serving or not replica.installed or not primary.serving:
                self.journal(replica.name, "filesync", "failed", "replica unreachable")
                return
            for env, signature in snapshot.items():
                dest = replica.fs.host(f"/etc/puppetlabs/code/environments/{env}")
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(staged / env, dest, symlinks=True)
                pe.clients.setdefault(replica.name, {})[env] = dict(signature)
                self.journal(
                    replica.name, "filesync", "ok", f"{env} {signature['deploy-signature']}"
                )
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def config_version(self, server: VM, env: str) -> str:
        text = server.fs.read_text(f"/etc/puppetlabs/code/environments/{env}/.r10k-deploy.json")
        if text:
            try:
                sig = json.loads(text)["signature"]
                return f"{server.short}-{env}-{sig[:11]}"
            except (ValueError, KeyError):
                pass
        return str(int(time.time()))
