"""SSH logins of the real-Puppet lab: a login user (vagrant's role) that exists only in one
namespace's private /etc, an OpenSSH server on the VM's address, and the `vagrant ssh-config`
entry the product reads to reach it.

The user is one more line in the namespace's copies of /etc/passwd, /etc/shadow and /etc/group,
with passwordless sudo from a sudoers.d that holds only its rule; nothing of the real system
changes (realpuppet.system_snapshot proves it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

LOGIN = "pedr-agent"  # the SSH login of every VM (vagrant's role); exists only in the namespaces


def add_login(etc: Path, home: Path) -> int:
    """LOGIN in the private /etc `etc`, with `home` and passwordless sudo; its uid."""
    uids = {
        int(line.split(":")[2])
        for line in (etc / "passwd").read_text().splitlines()
        if line.count(":") >= 6
    }
    gids = {
        int(line.split(":")[2])
        for line in (etc / "group").read_text().splitlines()
        if line.count(":") >= 3
    }
    uid = next(n for n in range(64000, 65000) if n not in uids and n not in gids)

    def append(name: str, line: str) -> None:
        path = etc / name
        path.write_text(path.read_text().rstrip("\n") + f"\n{line}\n")

    append("passwd", f"{LOGIN}:x:{uid}:{uid}:pe-dr real-Puppet lab login:{home}:/bin/bash")
    append("group", f"{LOGIN}:x:{uid}:")
    # password "*": no password login, yet not locked (sshd without PAM refuses locked ones)
    append("shadow", f"{LOGIN}:*:20000:0:99999:7:::")
    for entry in (etc / "sudoers.d").iterdir():
        if entry.name != "README":
            entry.unlink()
    sudoers = etc / "sudoers.d" / LOGIN
    sudoers.write_text(f"{LOGIN} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)
    return uid


def build_sshd(ssh: Path, address: str, client_key: Path) -> int:
    """Host key, authorized_keys (`client_key`.pub) and sshd_config in `ssh`, listening on a free
    port of `address`; the port. `client_key` is made when missing."""
    ssh.mkdir(parents=True, exist_ok=True)
    keys = [["-t", "ed25519", "-N", "", "-q", "-f", str(ssh / "host_ed25519")]]
    if not client_key.exists():
        keys.append(
            ["-t", "ed25519", "-N", "", "-q", "-C", "pe-dr-real-puppet", "-f", str(client_key)]
        )
    for args in keys:
        subprocess.run(["ssh-keygen", *args], check=True, capture_output=True, timeout=60)
    shutil.copy(client_key.with_name(client_key.name + ".pub"), ssh / "authorized_keys")
    with socket.socket() as s:
        s.bind((address, 0))
        port = int(s.getsockname()[1])
    (ssh / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {address}",
                f"HostKey {ssh / 'host_ed25519'}",
                f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
                f"PidFile {ssh / 'sshd.pid'}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PrintMotd no",
                "PrintLastLog no",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return port


def sshd_argv(ssh: Path) -> list[str]:
    return ["/usr/sbin/sshd", "-D", "-e", "-f", str(ssh / "sshd_config")]


def ssh_config(name: str, address: str, port: int, key: Path) -> str:
    """`vagrant ssh-config <name>`'s answer, in vagrant's format
    (tests/golden/vagrant-ssh-config.txt)."""
    return (
        f"Host {name}\n"
        f"  HostName {address}\n"
        f"  User {LOGIN}\n"
        f"  Port {port}\n"
        "  UserKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking no\n"
        "  PasswordAuthentication no\n"
        f'  IdentityFile "{key}"\n'
        "  IdentitiesOnly yes\n"
        "  LogLevel FATAL\n"
        "\n"
    )


def listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), 0.5).close()
    except OSError:
        return False
    return True
