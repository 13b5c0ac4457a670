"""Host: commands and files on one lab VM over SSH (fabric), with secrets only on stdin or SFTP.

* The connection is a `fabric.Connection` built from `vagrant ssh-config` (key file, port, user;
  no agent, no other keys, no ~/.ssh/config, host key accepted as vagrant's
  `StrictHostKeyChecking no` / `UserKnownHostsFile /dev/null` say). It is opened lazily and
  re-opened when it was dropped (a VM reboot, a halt).
* Commands run on a session channel of that connection's transport rather than through
  `Connection.run`: that is how the drill bounds a command in time and stops it on the remote side
  when the time is up (an SSH `signal` request, TERM then KILL, which OpenSSH >= 8.1 delivers to
  the session's process group; `sudo` relays it to the root command; sshd refuses it for root
  logins, which are not privilege-separated, but the lab logs in as `vagrant`), and how stdin is
  written and closed (EOF) without any echo or pty. Nothing is printed locally.
* Every command line is `shlex.join(argv)`; root commands are `sudo -n -i ` + that, a root login
  session (HOME=/root, PE's profile.d puts /opt/puppetlabs/bin on PATH) as PE requires.
* Files go by SFTP into a private temp file in the login user's home (mode 600 before any content
  is written) and are installed as root with `install -m MODE [-o O] [-g G]`; the temp file is
  always removed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import posixpath
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import fabric
import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from pe_dr import fanout
from pe_dr.errors import CommandFailed, ConfigError, PeDrError, TransientError
from pe_dr.parsing.vagrant import SSHParams
from pe_dr.secrets import scrub

ROOT_PREFIX = ("sudo", "-n", "-i")
# A connection unused for this long is not trusted any more: it is closed and opened anew (a VM
# that went away without a reset leaves a connection that looks open and hangs).
IDLE_REUSE_SECONDS = 120.0
UPLOAD_PREFIX = ".pe-dr-upload-"
_KILL_GRACE = 2.0


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it exited."""

    exit_code: int
    stdout: str
    stderr: str


def command_line(argv: Sequence[str], *, root: bool = False) -> str:
    """The exact command line sent to the host for `argv` (root: a `sudo -n -i` login session)."""
    if not argv:
        raise ValueError("empty command")
    line = shlex.join(list(argv))
    return f"{shlex.join(ROOT_PREFIX)} {line}" if root else line


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errnos = {getattr(e, "errno", None) for e in exc.errors.values()}
        if errnos & {111, 61, 10061}:
            return "connection refused"
        return "no address accepted the connection"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "connection timed out"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text = str(exc).strip() or type(exc).__name__
    return scrub(text.splitlines()[0])


def _tcp_no_delay(host: str, port: int, timeout: float) -> socket.socket:
    """The TCP connection for SSH, with TCP_NODELAY as OpenSSH's client sets it. Without it,
    Nagle's algorithm and the server's delayed ACK hold back the small packets of the handshake
    and of every exec (channel open, exec request, EOF) for about 40 ms each time."""
    deadline = time.monotonic() + timeout
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            _connect(sock, address, deadline)
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            error = exc
            continue
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"{host} has no address")


def _connect(sock: socket.socket, address: Any, deadline: float) -> None:
    """socket.connect by `deadline`, looking up every 0.2 s: a worker whose caller left (a stop
    signal) gives up at once rather than holding this host (and its lock, which the exit's
    close_connections takes) for the rest of a connect timeout to a host that drops packets."""
    sock.setblocking(False)
    code = sock.connect_ex(address)
    while code in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
        fanout.check()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        if select.select([], [sock], [], min(0.2, left))[1]:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


class Host:
    """One lab VM reached over SSH with the parameters `vagrant ssh-config` gave."""

    def __init__(
        self,
        name: str,
        ssh: SSHParams,
        *,
        connect_timeout: float = 30.0,
        on_unreachable: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.on_unreachable = on_unreachable  # told when connecting fails (stale settings?)
        self._conn: fabric.Connection | None = None
        self._lock = threading.RLock()
        self._last_used = 0.0  # monotonic time the connection was last in use

    # --- connection ------------------------------------------------------------------------------

    def _new_connection(self) -> fabric.Connection:
        gateway = None
        if self.ssh.jump:
            user, _, rest = self.ssh.jump.rpartition("@")
            host, _, port = rest.partition(":")
            gateway = self._connect_to(host, int(port or 22), user or self.ssh.user, None)
        return self._connect_to(self.ssh.host, self.ssh.port, self.ssh.user, gateway)

    def _connect_to(
        self, host: str, port: int, user: str, gateway: fabric.Connection | None
    ) -> fabric.Connection:
        config = fabric.Config(ssh_config=paramiko.SSHConfig())  # ignore ~/.ssh/config
        conn = fabric.Connection(
            host=host,
            user=user,
            port=port,
            config=config,
            gateway=gateway,
            connect_timeout=max(1, math.ceil(self.connect_timeout)),
            connect_kwargs={
                "key_filename": [self.ssh.key_file] if self.ssh.key_file else [],
                "look_for_keys": False,
                "allow_agent": self.ssh.agent,
                "banner_timeout": self.connect_timeout,
                "auth_timeout": self.connect_timeout,
            },
        )
        if self.ssh.known_hosts:  # only the keys it lists: an unknown or changed key is refused
            try:
                conn.client.load_host_keys(self.ssh.known_hosts)
            except OSError as exc:
                raise ConfigError(
                    f"the known_hosts file {self.ssh.known_hosts} for {self.name} cannot be "
                    f"read: {exc.strerror}"
                ) from None
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn

    def _connection(self) -> fabric.Connection:
        return self._connection_reused()[0]

    def _connection_reused(self) -> tuple[fabric.Connection, bool]:
        """The connection, and whether it was opened before this call (kept from earlier use)."""
        with self._lock:
            now = time.monotonic()
            if (
                self._conn is not None
                and self._conn.is_connected
                and now - self._last_used < IDLE_REUSE_SECONDS
            ):
                self._last_used = now
                return self._conn, True
            if self._conn is not None:
                self._drop()
            if self.ssh.key_file and not os.path.isfile(self.ssh.key_file):
                raise ConfigError(
                    f"the SSH key {self.ssh.key_file} that {self._where_settings_come_from()} "
                    "names does not exist"
                )
            conn = self._new_connection()
            sock: socket.socket | None = None
            try:
                if not self.ssh.jump:  # (through a jump host, the gateway's channel is the socket)
                    sock = _tcp_no_delay(self.ssh.host, self.ssh.port, self.connect_timeout)
                    conn.connect_kwargs["sock"] = sock
                conn.open()
            except paramiko.AuthenticationException:
                conn.close()
                self._unreachable()
                keys = self.ssh.key_file or "the SSH agent's keys"
                raise ConfigError(
                    f"{self.name} rejected {keys} for user {self.ssh.user} "
                    f"(check {self._where_settings_come_from()})"
                ) from None
            except paramiko.BadHostKeyException as exc:
                conn.close()
                raise ConfigError(
                    f"{self.name}'s SSH host key is not the one {self.ssh.known_hosts} lists "
                    f"for {exc.hostname}: the drill does not log in to a host it cannot identify"
                ) from None
            except paramiko.SSHException as exc:
                conn.close()
                if self.ssh.known_hosts and "known_hosts" in str(exc):
                    raise ConfigError(
                        f"{self.name} is not in {self.ssh.known_hosts}: check its host key "
                        "fingerprint with its admin, then add it (ssh-keyscan)"
                    ) from None
                if sock is not None:
                    sock.close()
                self._unreachable()
                raise TransientError(f"cannot reach {self.name} over SSH: {_reason(exc)}") from None
            except (OSError, EOFError) as exc:
                conn.close()
                if sock is not None:
                    sock.close()
                self._unreachable()
                raise TransientError(f"cannot reach {self.name} over SSH: {_reason(exc)}") from None
            self._conn = conn
            self._last_used = time.monotonic()
            return conn, False

    def _where_settings_come_from(self) -> str:
        if self.ssh.known_hosts or self.ssh.agent or self.ssh.jump:
            return f"the lab spec's entry for {self.name}"
        return f"`vagrant ssh-config {self.name}`"

    def _unreachable(self) -> None:
        if self.on_unreachable is not None:
            with contextlib.suppress(Exception):
                self.on_unreachable()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # a dead connection may fail to close; it is gone anyway
            with contextlib.suppress(Exception):
                conn.close()

    def close(self, wait: float = -1) -> None:
        """Close the SSH connection (a later call reconnects). With `wait`, no longer than that
        for a thread busy connecting: at exit, a thread left connecting to a host that drops
        packets (it is a daemon and goes with the process) must not hold the process."""
        if not self._lock.acquire(timeout=wait):
            return
        try:
            self._drop()
        finally:
            self._lock.release()

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- commands --------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        root: bool = False,
        stdin: str | bytes | None = None,
        timeout: float = 600.0,
        ok_codes: Collection[int] = (0,),
    ) -> CommandResult:
        """Run `argv` on the host; CommandFailed unless its exit code is in `ok_codes`."""
        line = command_line(argv, root=root)
        code, out, err = self._exec(line, stdin=stdin, timeout=timeout)
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        if code not in ok_codes:
            raise CommandFailed(self.name, scrub(line), code, scrub(stdout), scrub(stderr))
        return CommandResult(code, stdout, stderr)

    def _exec(
        self, line: str, *, stdin: str | bytes | None, timeout: float
    ) -> tuple[int, bytes, bytes]:
        shown = scrub(line)
        deadline = time.monotonic() + timeout
        chan = self._open_session()
        out, err = bytearray(), bytearray()
        try:
            self._exec_request(chan, line, min(self.connect_timeout, timeout))
            if stdin is not None:
                data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
                chan.settimeout(max(0.1, deadline - time.monotonic()))
                chan.sendall(data)
            chan.shutdown_write()  # the command sees EOF on stdin
            chan.settimeout(0.0)
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if (
                    chan.exit_status_ready()
                    and (chan.eof_received or chan.closed)
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                if chan.closed and not chan.exit_status_ready():
                    raise EOFError("channel closed without an exit status")
                if fanout.abandoned():  # the caller left (a stop signal): stop the command
                    self._stop(chan)
                    raise fanout.Abandoned(f"`{shown}` on {self.name} was left")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop(chan)
                    raise TransientError(
                        f"`{shown}` on {self.name} did not finish within {timeout:g} s "
                        "and was stopped"
                    )
                select.select([chan], [], [], min(remaining, 0.1))
            return chan.recv_exit_status(), bytes(out), bytes(err)
        except (PeDrError, fanout.Abandoned):
            raise
        except TimeoutError:
            self._stop(chan)
            raise TransientError(
                f"`{shown}` on {self.name} did not finish within {timeout:g} s and was stopped"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(
                f"lost the SSH connection to {self.name} while running `{shown}`: {_reason(exc)}"
            ) from None
        except BaseException:
            self._stop(chan)  # interrupted (Ctrl-C, cancellation): do not leave it running
            raise
        finally:
            chan.close()
            self._last_used = time.monotonic()  # busy until now: a long command is not idleness

    def _open_session(self) -> paramiko.Channel:
        """A session channel; on a connection kept from earlier use that no longer opens one (the
        VM rebooted, sshd restarted), once more on a new connection: nothing was sent yet."""
        while True:
            conn, reused = self._connection_reused()
            try:
                return conn.client.get_transport().open_session(timeout=self.connect_timeout)
            except (OSError, EOFError, paramiko.SSHException, AttributeError) as exc:
                self.close()
                if not reused:
                    raise TransientError(
                        f"cannot reach {self.name} over SSH: {_reason(exc)}"
                    ) from None

    def _exec_request(self, chan: paramiko.Channel, line: str, timeout: float) -> None:
        """Channel.exec_command with its wait for sshd's answer bounded: on a connection gone
        silent (the host drops packets) paramiko waits for it until TCP gives up, about 15
        minutes; a worker whose caller left stops waiting at once."""
        msg = Message()
        msg.add_byte(cMSG_CHANNEL_REQUEST)
        msg.add_int(chan.remote_chanid)
        msg.add_string("exec")
        msg.add_boolean(True)
        msg.add_string(line)
        chan._event_pending()  # (what exec_command does, but for its unbounded wait)
        chan.transport._send_user_message(msg)
        deadline = time.monotonic() + timeout
        while not chan.event.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            fanout.check()
            if time.monotonic() >= deadline:
                self.close()
                raise TransientError(
                    f"{self.name} did not answer over SSH within {timeout:g} s (packets dropped?)"
                )
        if not chan.event_ready:
            raise chan.transport.get_exception() or paramiko.SSHException("Channel closed.")

    def _stop(self, chan: paramiko.Channel) -> None:
        """Ask sshd to signal the command's process group (TERM, then KILL), then close."""
        for signame in ("TERM", "KILL"):
            if chan.closed or chan.exit_status_ready():
                break
            try:
                msg = Message()
                msg.add_byte(cMSG_CHANNEL_REQUEST)
                msg.add_int(chan.remote_chanid)
                msg.add_string("signal")
                msg.add_boolean(False)
                msg.add_string(signame)
                chan.transport._send_user_message(msg)
            except Exception:  # noqa: S112 (best effort: the channel is closed below anyway)
                continue
            chan.status_event.wait(_KILL_GRACE)
        chan.close()

    # --- files -----------------------------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient:
        while True:
            conn, reused = self._connection_reused()
            try:
                return conn.sftp()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close()
                if not reused:  # a kept connection that went stale: once more on a new one
                    raise TransientError(
                        f"cannot open SFTP on {self.name}: {_reason(exc)}"
                    ) from None

    def put(
        self,
        path: str,
        content: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
        root: bool = True,
    ) -> None:
        """Write `content` to `path` with `mode` (and owner/group), through a private temp file."""
        sftp = self._sftp()
        try:
            home = sftp.normalize(".")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(f"cannot use SFTP on {self.name}: {_reason(exc)}") from None
        tmp = posixpath.join(home, UPLOAD_PREFIX + secrets.token_hex(8))
        try:
            try:
                with sftp.open(tmp, "wb") as fh:
                    fh.chmod(0o600)  # before any byte of content is written
                    fh.write(content)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise TransientError(
                    f"cannot upload {path} to {self.name}: {_reason(exc)}"
                ) from None
            parent = posixpath.dirname(path)
            if parent and parent != "/":
                self.run(["mkdir", "-p", parent], root=root, timeout=60)
            install = ["install", "-m", format(mode, "04o")]
            if owner:
                install += ["-o", owner]
            if group:
                install += ["-g", group]
            self.run([*install, tmp, path], root=root, timeout=60)
        finally:
            with contextlib.suppress(PeDrError):
                self.run(["rm", "-f", tmp], timeout=60)

    def read(self, path: str, *, root: bool = False) -> bytes:
        """The content of `path` (root: `sudo -n -i cat PATH`; otherwise over SFTP)."""
        if root:
            line = command_line(["cat", path], root=True)
            code, out, err = self._exec(line, stdin=None, timeout=120)
            if code != 0:
                raise CommandFailed(
                    self.name, line, code, "", scrub(err.decode("utf-8", "replace"))
                )
            return out
        sftp = self._sftp()
        buffer = io.BytesIO()
        try:
            sftp.getfo(path, buffer)
        except FileNotFoundError:
            raise CommandFailed(
                self.name, f"cat {shlex.quote(path)}", 1, "", f"{path}: No such file or directory"
            ) from None
        except PermissionError:
            raise CommandFailed(
                self.name, f"cat {shlex.quote(path)}", 1, "", f"{path}: Permission denied"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(f"cannot read {path} on {self.name}: {_reason(exc)}") from None
        return buffer.getvalue()

    def exists(self, path: str, *, root: bool = False) -> bool:
        """Whether `path` exists (`test -e`)."""
        return self.run(["test", "-e", path], root=root, ok_codes=(0, 1), timeout=60).exit_code == 0
