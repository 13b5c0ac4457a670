"""What vagrant prints: machine-readable status, snapshots, ssh-config (interfaces §6,
tests/golden/)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pe_dr.errors import PermanentError
from pe_dr.parsing.text import lines as _lines

_VAGRANT_COMMA = "%!(VAGRANT_COMMA)"


# --- vagrant -------------------------------------------------------------------------------------


def _unescape_vagrant(data: str) -> str:
    return data.replace(_VAGRANT_COMMA, ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_vagrant_status(text: str) -> dict[str, str]:
    """`vagrant status --machine-readable` → {machine name: state id} (e.g. `running`).

    Rows are `timestamp,target,type,data`; only `state` rows count, so `metadata`, `ui` and
    `provider-name` rows (and lines that are not rows at all) are ignored.
    """
    states: dict[str, str] = {}
    for line in _lines(text):
        parts = line.split(",", 3)
        if len(parts) < 4 or parts[2] != "state" or not parts[1]:
            continue
        states[parts[1]] = _unescape_vagrant(parts[3]).strip()
    return states


def vagrant_error_exit(text: str) -> str | None:
    """The message of an `error-exit` row of machine-readable vagrant output, if there is one."""
    for line in _lines(text):
        parts = line.split(",", 3)
        if len(parts) == 4 and parts[2] == "error-exit":
            fields = parts[3].split(",", 1)
            message = _unescape_vagrant(fields[-1]).strip()
            return message or fields[0]
    return None


def parse_snapshot_list(text: str) -> list[str]:
    """`vagrant snapshot list VM` (human output) → snapshot names, [] when there are none."""
    if "No snapshots have been taken yet" in text or "not created" in text:
        return []
    names = []
    for line in _lines(text):
        name = line.strip()
        if not name or name.startswith("==>"):
            continue
        names.append(name)
    return names


@dataclass(frozen=True)
class SSHParams:
    """How to reach a host over SSH: as `vagrant ssh-config` says for a VM, as the spec says for
    an installation's host (which adds a jump host, the SSH agent and a known_hosts file)."""

    host: str
    port: int
    user: str
    key_file: str  # empty: no key file (with `agent`, the SSH agent's keys)
    jump: str = ""  # `[user@]host[:port]` to connect through (OpenSSH's ProxyJump)
    agent: bool = False
    # the host keys to trust, refusing any other; empty: a VM's new key is accepted, as
    # `vagrant ssh-config` (StrictHostKeyChecking no) does for VMs rebuilt with new keys
    known_hosts: str = ""


def _ssh_value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return raw[1:-1]
    try:
        parts = shlex.split(raw)
    except ValueError:
        return raw
    return parts[0] if len(parts) == 1 else raw


def parse_ssh_config(text: str) -> dict[str, SSHParams]:
    """`vagrant ssh-config [vm]` → {Host alias: SSHParams}; every `Host` block gives one entry.

    The first IdentityFile of a block wins (vagrant lists the machine's private key first).
    Blocks without a HostName are skipped (there is nothing to connect to).
    """
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in _lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"(\S+?)(?:\s*=\s*|\s+)(.*)$", stripped)
        if not match:
            continue
        key, value = match.group(1).lower(), _ssh_value(match.group(2))
        if key == "host":
            current = blocks.setdefault(value, {})
            continue
        if current is not None and key not in current:
            current[key] = value
    result: dict[str, SSHParams] = {}
    for name, opts in blocks.items():
        if "hostname" not in opts:
            continue
        try:
            port = int(opts.get("port", "22"))
        except ValueError:
            raise PermanentError(
                f"vagrant ssh-config for {name} has a port that is not a number: {opts['port']!r}"
            ) from None
        result[name] = SSHParams(
            host=opts["hostname"],
            port=port,
            user=opts.get("user", "vagrant"),
            key_file=opts.get("identityfile", ""),
        )
    return result


# --- puppet agent --------------------------------------------------------------------------------
