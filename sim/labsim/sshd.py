"""Per-VM SSH servers (asyncssh): exec, SFTP, git@gitlab.vm."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
from typing import TYPE_CHECKING, Any

import asyncssh

from labsim import commands

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


class _Server(asyncssh.SSHServer):
    def __init__(self, lab: Lab, vm: VM) -> None:
        self.lab = lab
        self.vm = vm
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.vm.ssh_conns.add(conn)
        self.lab.journal(self.vm.name, "ssh.connect", "ok", "")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.vm.ssh_conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        # who: the drill logs in as vagrant; the lab's own git and ssh-keyscan are connections too
        self.lab.journal(self.vm.name, "ssh.login", "ok", username)
        if self.lab.fault("ssh.connect", self.vm.name, f"{username}@{self.vm.name}"):
            assert self.conn is not None
            self.conn.abort()
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        pub = key.export_public_key("openssh").decode().split()[1]
        if username == "vagrant":
            ok = pub == self.lab.lab_key.export_public_key("openssh").decode().split()[1]
        elif username == "git" and self.vm.role == "gitlab" and self.lab.gitlab is not None:
            ok = any(k["key"].split()[1] == pub for k in self.lab.gitlab.keys)
        else:
            ok = False
        if not ok:
            self.lab.journal(self.vm.name, "ssh.auth", "refused", f"{username}: key not accepted")
        return ok


class _SFTP(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, lab: Lab, vm: VM) -> None:
        self.vm = vm
        self.lab = lab
        self.user = chan.get_extra_info("username") or "vagrant"
        home = "/root" if self.user == "root" else f"/home/{self.user}"
        super().__init__(chan, chroot=str(vm.fs.root).encode())
        self._home = home.encode()

    def _vpath(self, path: bytes) -> str:
        return self.vm.fs.vm_path(self.map_path(path).decode())

    def map_path(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            path = self._home + b"/" + path
        return super().map_path(path)

    def _deny(self, path: str) -> None:
        raise asyncssh.SFTPPermissionDenied(f"Permission denied: {path}")

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        vpath = self._vpath(path)
        writing = pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC)
        if writing and not self.vm.fs.can_write(self.user, vpath):
            self._deny(vpath)
        if not writing and not self.vm.fs.can_read(self.user, vpath):
            self._deny(vpath)
        existed = os.path.exists(self.map_path(path))
        result = super().open(path, pflags, attrs)
        if writing and not existed:
            self.vm.fs.set_owner(vpath, self.user, self.user)
        self.lab.journal(self.vm.name, "sftp.put" if writing else "sftp.get", "ok", vpath)
        return result

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        vpath = self._vpath(path)
        if not self.vm.fs.can_write(self.user, vpath):
            self._deny(vpath)
        super().mkdir(path, attrs)
        self.vm.fs.set_owner(vpath, self.user, self.user)

    def remove(self, path: bytes) -> None:
        vpath = self._vpath(path)
        if not self.vm.fs.can_write(self.user, vpath):
            self._deny(vpath)
        super().remove(path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        for p in (oldpath, newpath):
            if not self.vm.fs.can_write(self.user, self._vpath(p)):
                self._deny(self._vpath(p))
        super().rename(oldpath, newpath)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        vpath = self._vpath(path)
        if not self.vm.fs.can_write(self.user, vpath):
            self._deny(vpath)
        super().setstat(path, attrs)


async def _handle(lab: Lab, vm: VM, process: asyncssh.SSHServerProcess[bytes]) -> None:
    user = process.get_extra_info("username") or "vagrant"
    command = process.command
    if command is None:
        process.stderr.write(b"labsim: interactive shells are not supported; run a command\n")
        process.exit(1)
        return
    if user == "git":
        await _git_service(lab, vm, process, command)
        return
    try:
        result = await commands.run(lab, vm, user, command, process)
    except Exception as exc:
        lab.journal(vm.name, "ssh.exec", "failed", f"{command} (internal error: {exc})")
        result = commands.Result(1, "", f"labsim internal error: {exc}\n")
    if result.out:
        process.stdout.write(result.out.encode())
    if result.err:
        process.stderr.write(result.err.encode())
    process.exit(result.rc)


async def _git_service(
    lab: Lab, vm: VM, process: asyncssh.SSHServerProcess[bytes], command: str
) -> None:
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = []
    if len(argv) != 2 or argv[0] not in ("git-upload-pack", "git-receive-pack"):
        process.stdout.write(b"Welcome to GitLab, @root!\n")
        lab.journal(vm.name, "git.ssh", "ok", command)
        process.exit(0 if not argv else 1)
        return
    service, path = argv
    path = path.strip("/").removesuffix(".git")
    gl = lab.gitlab
    if gl is None or gl.project(path) is None:
        process.stderr.write(
            b"remote: \nremote: " + b"=" * 72 + b"\n"
            b"remote: \nremote: The project you were looking for could not be found "
            b"or you don't have "
            b"permission to view it.\nremote: \n"
            b"remote: ========================================================================\n"
            b"remote: \nfatal: Could not read from remote repository.\n\n"
            b"Please make sure you have the correct access rights\nand the repository exists.\n"
        )
        lab.journal(vm.name, "git.ssh", "failed", f"{command}: project not found")
        process.exit(1)
        return
    op = "git.push" if service == "git-receive-pack" else "git.fetch"
    if lab.fault(op, vm.name, command):
        process.stderr.write(
            b"remote: GitLab: Internal API unreachable\n"
            b"fatal: Could not read from remote repository.\n"
        )
        process.exit(1)
        return
    bare = lab.repo_path(path)
    before = await _refs(lab, bare)
    proc = await asyncio.create_subprocess_exec(
        service,
        str(bare),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lab.children.add(proc.pid)
    assert proc.stdin and proc.stdout and proc.stderr

    async def pump_in() -> None:
        assert proc.stdin
        try:
            while True:
                data = await process.stdin.read(65536)
                if not data:
                    break
                proc.stdin.write(data)
                await proc.stdin.drain()
        except (OSError, asyncssh.Error, BrokenPipeError):
            pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    async def pump_out(src: asyncio.StreamReader, dst: Any) -> None:
        while True:
            data = await src.read(65536)
            if not data:
                break
            dst.write(data)

    tin = asyncio.ensure_future(pump_in())
    await asyncio.gather(
        pump_out(proc.stdout, process.stdout), pump_out(proc.stderr, process.stderr)
    )
    rc = await proc.wait()
    lab.children.discard(proc.pid)
    tin.cancel()
    lab.journal(vm.name, op, "ok" if rc == 0 else "failed", command)
    process.exit(rc)
    if service == "git-receive-pack" and rc == 0:
        after = await _refs(lab, bare)
        changed = {r: s for r, s in after.items() if before.get(r) != s}
        if changed:
            lab.spawn(lab.api.fire_push_hooks(lab, path, before, changed))


async def _refs(lab: Lab, bare: Any) -> dict[str, str]:
    _rc, out, _ = await lab.git(
        "--git-dir", str(bare), "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads"
    )
    refs = {}
    for line in out.decode().splitlines():
        if " " in line:
            r, s = line.split(" ", 1)
            refs[r] = s
    return refs


async def start(lab: Lab, vm: VM) -> None:
    def sftp_factory(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return _SFTP(chan, lab, vm)

    async def process_factory(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await _handle(lab, vm, process)

    kwargs: dict[str, Any] = {
        "server_host_keys": vm.host_keys,
        "process_factory": process_factory,
        "sftp_factory": sftp_factory,
        "encoding": None,
        "allow_scp": False,
        "reuse_address": True,
    }
    for port in (22, 2222):
        try:
            vm.ssh_server = await asyncssh.create_server(
                lambda: _Server(lab, vm), vm.address, port, **kwargs
            )
            vm.ssh_port = port
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EADDRINUSE) or port == 2222:
                raise
