"""Host against a real OpenSSH server on loopback (Debian packages `openssh-server` and `sudo`).

The test builds a small copy of a vagrant box: sshd (run as root, on 127.0.0.1 and a free port,
throw-away host key, UsePAM no, StrictModes no) and a login user with passwordless sudo, like
`vagrant`, created for the module and removed afterwards. A non-root login matters: OpenSSH
delivers the SSH `signal` request that stops a timed-out command only to privilege-separated
(non-root) sessions, and the lab logs in as `vagrant`. Needs root (CI runs as root); skips
otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pe_dr.errors import CommandFailed, PermanentError, TransientError
from pe_dr.lab import host as host_module
from pe_dr.lab.host import UPLOAD_PREFIX, Host, command_line
from pe_dr.parsing.vagrant import SSHParams
from pe_dr.secrets import remember

SSHD = "/usr/sbin/sshd"
PROFILE_MARKER = Path("/etc/profile.d/zz-pe-dr-test-login.sh")

LOGIN = "pedr-vagrant"
SUDOERS = Path(f"/etc/sudoers.d/{LOGIN}")

pytestmark = [
    pytest.mark.slow,  # ~6 s: two deliberate 1 s timeouts, sshd start, a user per module
    pytest.mark.skipif(
        not (os.path.exists(SSHD) and shutil.which("ssh-keygen")),
        reason="OpenSSH server not installed (apt-get install openssh-server)",
    ),
    pytest.mark.skipif(
        shutil.which("sudo") is None, reason="sudo not installed (apt-get install sudo)"
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root to run sshd and create the test login user"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {deadline_s} s")


class Server:
    def __init__(self, port: int, key_file: str, log: Path, home: Path, host_key: str = "") -> None:
        self.host_key = host_key  # `ssh-ed25519 AAAA…`: what a known_hosts line lists for it
        self.home = home
        self.port = port
        self.key_file = key_file
        self.log = log

    def params(self) -> SSHParams:
        return SSHParams(host="127.0.0.1", port=self.port, user=LOGIN, key_file=self.key_file)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sshd")
    keydir = tmp / "key dir"  # a space, as in vagrant's quoted IdentityFile
    keydir.mkdir()
    for args in (
        ["-t", "ed25519", "-N", "", "-q", "-f", str(tmp / "host_ed25519")],
        ["-t", "ed25519", "-N", "", "-q", "-C", "pe-dr-test", "-f", str(keydir / "id")],
    ):
        subprocess.run(["ssh-keygen", *args], check=True, capture_output=True)
    subprocess.run(["userdel", "-r", LOGIN], capture_output=True)  # leftover of a killed run
    shutil.rmtree(f"/home/{LOGIN}", ignore_errors=True)  # a home its user no longer owns
    # password "*": no password login, but not "locked" (sshd without PAM refuses locked accounts)
    subprocess.run(
        ["useradd", "-m", "-s", "/bin/bash", "-p", "*", LOGIN], check=True, capture_output=True
    )
    SUDOERS.write_text(f"{LOGIN} ALL=(ALL) NOPASSWD: ALL\n")
    SUDOERS.chmod(0o440)
    home = Path(f"~{LOGIN}").expanduser()
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text((keydir / "id.pub").read_text())
    shutil.chown(home / ".ssh", LOGIN, LOGIN)
    shutil.chown(home / ".ssh" / "authorized_keys", LOGIN, LOGIN)
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {tmp / 'host_ed25519'}",
                "AuthorizedKeysFile .ssh/authorized_keys",
                f"PidFile {tmp / 'sshd.pid'}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    log = tmp / "sshd.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=log_fh, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(port, proc)
        host_key = " ".join((tmp / "host_ed25519.pub").read_text().split()[:2])
        yield Server(port, str(keydir / "id"), log, home, host_key)
    finally:
        # the listener only: sshd leaves sessions to themselves, so they are killed by user below
        proc.kill()
        proc.wait(timeout=10)
        SUDOERS.unlink(missing_ok=True)
        subprocess.run(["pkill", "-KILL", "-u", LOGIN], capture_output=True)
        subprocess.run(["userdel", "-r", LOGIN], capture_output=True)


@pytest.fixture
def host(sshd: Server) -> Iterator[Host]:
    with Host("replica.vm", sshd.params(), connect_timeout=5) as h:
        yield h


def _processes(args: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline == args and state != "Z":
            found.append(int(entry.name))
    return found


def _gone(args: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _processes(args):
            return True
        time.sleep(0.05)
    return not _processes(args)


def _home_uploads(sshd: Server) -> list[str]:
    return [p.name for p in sshd.home.iterdir() if p.name.startswith(UPLOAD_PREFIX)]


def test_run_stdout_and_exit(host: Host) -> None:
    result = host.run(["echo", "hello world", "it's"])
    assert result.exit_code == 0
    assert result.stdout == "hello world it's\n"
    assert result.stderr == ""


def test_nonzero_exit_raises_command_failed(host: Host) -> None:
    with pytest.raises(CommandFailed) as info:
        host.run(["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"])
    assert info.value.exit_code == 3
    assert info.value.host == "replica.vm"
    assert info.value.stdout == "partial\n"
    assert "it broke" in str(info.value)


def test_ok_codes(host: Host) -> None:
    assert host.run(["false"], ok_codes=(0, 1)).exit_code == 1


def test_stdin_reaches_the_command_and_never_the_command_line(host: Host) -> None:
    secret = remember("Sup3r-Secret-Console-Pw")
    argv = ["cat"]
    assert host.run(argv, stdin=secret).stdout == secret
    assert secret not in command_line(argv) and secret not in command_line(argv, root=True)
    # bytes work too, and the command sees EOF (cat ends)
    assert host.run(["wc", "-c"], stdin=b"\x00\x01abc").stdout.strip() == "5"


def test_root_is_a_login_session(host: Host) -> None:
    PROFILE_MARKER.write_text("export PE_DR_TEST_LOGIN=profile-d-was-read\n")
    try:
        assert host.run(["printenv", "HOME"], root=True).stdout == "/root\n"
        assert host.run(["id", "-un"], root=True).stdout == "root\n"
        # a login shell reads /etc/profile.d, as PE's puppet-agent.sh relies on for its PATH
        marker = host.run(["printenv", "PE_DR_TEST_LOGIN"], root=True).stdout
        assert marker == "profile-d-was-read\n"
    finally:
        PROFILE_MARKER.unlink(missing_ok=True)
    assert command_line(["puppet", "agent", "-t"], root=True) == "sudo -n -i puppet agent -t"


def test_put_mode_owner_and_no_temp_left(host: Host, sshd: Server, tmp_path: Path) -> None:
    target = tmp_path / "new dir" / "keys.json"
    host.put(str(target), b'[{"key":"k"}]', mode=0o640, owner="nobody", group="nogroup")
    assert target.read_bytes() == b'[{"key":"k"}]'
    stat = host.run(["stat", "-c", "%a %U %G", str(target)], root=True).stdout.strip()
    assert stat == "640 nobody nogroup"
    assert _home_uploads(sshd) == []


def test_put_failure_still_removes_temp(host: Host, sshd: Server, tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as info:
        host.put(str(tmp_path / "x"), b"data", owner="no-such-user-pe-dr")
    assert info.value.command.startswith("sudo -n -i install -m 0644 -o no-such-user-pe-dr ")
    assert _home_uploads(sshd) == []
    assert not (tmp_path / "x").exists()


def test_read_and_exists(host: Host, sshd: Server, tmp_path: Path) -> None:
    secret_file = tmp_path / "token"  # root-only: pytest's tmp dirs are 0700 root
    secret_file.write_bytes(b"tok\xffen\n")
    secret_file.chmod(0o600)
    assert host.read(str(secret_file), root=True) == b"tok\xffen\n"
    assert host.exists(str(secret_file), root=True)
    assert not host.exists(str(secret_file))  # the login user cannot see it
    with pytest.raises(CommandFailed):
        host.read(str(secret_file))  # SFTP as the login user: permission denied
    public = sshd.home / "ca.pem"
    public.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert host.read(str(public)) == b"-----BEGIN CERTIFICATE-----\n"  # SFTP
    assert host.exists(str(public))
    with pytest.raises(CommandFailed):
        host.read(str(tmp_path / "missing"))
    with pytest.raises(CommandFailed):
        host.read(str(tmp_path / "missing"), root=True)


def test_timeout_is_transient_and_kills_the_command(host: Host) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        host.run(["sleep", "37"], timeout=1)
    assert time.monotonic() - started < 5
    assert "replica.vm" in str(info.value) and "sleep 37" in str(info.value)
    assert _gone("sleep 37"), "the timed-out command is still running"
    assert host.run(["echo", "still usable"]).stdout == "still usable\n"


def test_root_timeout_kills_the_command(host: Host) -> None:
    with pytest.raises(TransientError, match="sudo -n -i sleep 38"):
        host.run(["sleep", "38"], root=True, timeout=1)
    assert _gone("sleep 38"), "the timed-out root command is still running"


def test_reconnects_after_a_drop(host: Host) -> None:
    assert host.run(["true"]).exit_code == 0
    assert host._conn is not None
    host._conn.client.get_transport().close()  # the VM rebooted under us
    assert host.run(["echo", "back"]).stdout == "back\n"


def test_a_kept_connection_that_opens_no_channel_is_replaced_at_once(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection kept from an earlier step (pe_dr.lab.live shares them) may have gone stale while
    still looking open: the command goes on a new connection, not to a retry's back-off."""
    assert host.run(["true"]).exit_code == 0
    assert host._conn is not None
    stale = host._conn.client.get_transport()

    def refuse(*args: object, **kwargs: object) -> None:
        raise paramiko.SSHException("Unable to open channel.")

    monkeypatch.setattr(stale, "open_session", refuse)
    assert host.run(["echo", "again"]).stdout == "again\n"
    assert host._conn.client.get_transport() is not stale


def test_a_connection_idle_too_long_is_opened_anew(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host.run(["true"]).exit_code == 0
    assert host._conn is not None
    first = host._conn.client.get_transport()
    assert host.run(["true"]).exit_code == 0
    assert host._conn.client.get_transport() is first, "kept while in use"
    monkeypatch.setattr(host_module, "IDLE_REUSE_SECONDS", 0.0)
    assert host.run(["true"]).exit_code == 0
    assert host._conn.client.get_transport() is not first


def test_refused_connection_is_transient(sshd: Server) -> None:
    params = SSHParams("127.0.0.1", _free_port(), "vagrant", sshd.key_file)
    with Host("primary.vm", params, connect_timeout=3) as h, pytest.raises(TransientError) as info:
        h.run(["true"])
    assert str(info.value) == "cannot reach primary.vm over SSH: connection refused"


def test_wrong_key_is_permanent(sshd: Server, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(tmp_path / "other")], check=True
    )
    params = SSHParams("127.0.0.1", sshd.port, LOGIN, str(tmp_path / "other"))
    with Host("linux.vm", params, connect_timeout=5) as h, pytest.raises(PermanentError):
        h.run(["true"])


# --- an installation's hosts: host keys verified, a jump host ------------------------------------


def _known_hosts(tmp_path: Path, sshd: Server, key: str | None = None) -> str:
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sshd.port} {key or sshd.host_key}\n" if key != "" else "")
    return str(path)


def _installation_params(sshd: Server, known_hosts: str, jump: str = "") -> SSHParams:
    return dataclasses.replace(sshd.params(), known_hosts=known_hosts, jump=jump)


def test_an_installation_host_whose_key_is_listed_is_reached(sshd: Server, tmp_path: Path) -> None:
    params = _installation_params(sshd, _known_hosts(tmp_path, sshd))
    with Host("pe-primary", params, connect_timeout=5) as h:
        assert h.run(["echo", "ok"]).stdout == "ok\n"


def test_an_installation_host_not_in_known_hosts_is_refused(sshd: Server, tmp_path: Path) -> None:
    known_hosts = _known_hosts(tmp_path, sshd, key="")
    with (
        Host("pe-primary", _installation_params(sshd, known_hosts), connect_timeout=5) as h,
        pytest.raises(PermanentError, match=f"pe-primary is not in {known_hosts}"),
    ):
        h.run(["true"])


def test_an_installation_host_with_another_key_is_refused(sshd: Server, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(other)], check=True)
    key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known_hosts = _known_hosts(tmp_path, sshd, key=key)
    with (
        Host("pe-primary", _installation_params(sshd, known_hosts), connect_timeout=5) as h,
        pytest.raises(PermanentError, match=r"SSH host key is not the one .* lists"),
    ):
        h.run(["true"])


def test_an_installation_host_is_reached_through_its_jump_host(
    sshd: Server, tmp_path: Path
) -> None:
    before = sshd.log.read_text().count("Accepted publickey")
    jump = f"{LOGIN}@127.0.0.1:{sshd.port}"
    params = _installation_params(sshd, _known_hosts(tmp_path, sshd), jump=jump)
    with Host("pe-replica", params, connect_timeout=5) as h:
        assert h.run(["echo", "through"]).stdout == "through\n"
    # two logins for one connection: the jump host's, then the target's through its channel
    assert sshd.log.read_text().count("Accepted publickey") - before == 2
