"""VirtualBox's host-only address ranges: refuse, before any VM starts, a lab it would refuse later.

Since VirtualBox 6.1.28, on Linux and macOS hosts, a host-only adapter may only take an address in
192.168.56.0/21 unless `/etc/vbox/networks.conf` allows other ranges, one `* RANGE [RANGE...]` line
each (`#` lines are comments); when the file exists only its ranges are allowed. `vagrant up` then
aborts naming the address, after the box import and minutes of work. Windows hosts are not
affected. Sources: VirtualBox 6.1.28 changelog and manual §6.7 "Host-Only Networking";
../shared/reference/real-world-findings.md §1 row 1 (the tutorial's 192.168.50.x addresses).
"""

from __future__ import annotations

import ipaddress
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from pe_dr.errors import ConfigError
from pe_dr.lab.spec import LabSpec

NETWORKS_CONF = "/etc/vbox/networks.conf"
DEFAULT_RANGES = ("192.168.56.0/21",)
FIRST_RESTRICTED = (6, 1, 28)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`VBoxManage --version` output (e.g. `7.0.14r161095`, `6.1.50_Ubuntur161033`)."""
    m = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def allowed_ranges(conf_text: str | None) -> list[Network]:
    """The ranges a networks.conf allows (the default range when there is no file)."""
    if conf_text is None:
        return [ipaddress.ip_network(r) for r in DEFAULT_RANGES]
    ranges: list[Network] = []
    for line in conf_text.splitlines():
        words = line.split()
        if not words or words[0] != "*":
            continue  # comments and anything VirtualBox does not read as a range line
        for word in words[1:]:
            try:
                ranges.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return ranges


def _line_to_add(addresses: Iterable[str]) -> str:
    nets = sorted({ipaddress.ip_network(f"{a}/24", strict=False) for a in addresses}, key=str)
    return "* " + " ".join(str(n) for n in nets)


def host_only_problem(
    hosts: Sequence[tuple[str, str]],
    *,
    version: tuple[int, int, int] | None,
    conf_text: str | None,
    system: str,
) -> str | None:
    """Why VirtualBox would refuse these (name, address) pairs, in one sentence, or None."""
    if system not in {"Linux", "Darwin"} or version is None or version < FIRST_RESTRICTED:
        return None
    ranges = allowed_ranges(conf_text)
    outside = [
        (name, address)
        for name, address in hosts
        if not any(ipaddress.ip_address(address) in net for net in ranges)
    ]
    if not outside:
        return None
    name, address = outside[0]
    more = f" (and {len(outside) - 1} more lab addresses)" if len(outside) > 1 else ""
    allowed = ", ".join(str(r) for r in ranges) or "no range"
    where = NETWORKS_CONF if conf_text is not None else f"{NETWORKS_CONF} (create it)"
    return (
        f"VirtualBox {'.'.join(map(str, version))} allows host-only addresses only in {allowed}, "
        f"and {address} ({name}){more} is outside: add the line "
        f"`{_line_to_add(a for _, a in outside)}` to {where} and run again"
    )


def virtualbox_version() -> tuple[int, int, int] | None:
    """The installed VirtualBox version from `VBoxManage --version`; None when not installed."""
    exe = shutil.which("VBoxManage", path=os.environ.get("PATH", os.defpath))
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(out.stdout)


def _read_conf(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def require_host_only_addresses(spec: LabSpec, *, conf_path: str | None = None) -> None:
    """ConfigError naming the address, the file and the line to add when VirtualBox would refuse
    one of the lab's addresses; nothing when it would not, or VirtualBox is not installed."""
    version = virtualbox_version()
    if version is None:
        return
    problem = host_only_problem(
        [(h.name, h.address) for h in spec.hosts],
        version=version,
        conf_text=_read_conf(conf_path or NETWORKS_CONF),
        system=platform.system(),
    )
    if problem:
        raise ConfigError(problem)
