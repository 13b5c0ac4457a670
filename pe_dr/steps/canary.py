"""The canary drill's fault: the primary blocked from a canary agent on the canary's own firewall.

PE documents this test for a live installation: keep a test node from reaching the primary with the
host firewall (reject or drop), run the agent, see it served by the replica, reconnect
(real-world-findings §4.3). The block lives in an nftables table the drill owns; each blocked
address and port is a set element with a timeout, so the kernel removes it by itself after the TTL
with no process acting (measured: §4.4, expiry within ±10 ms). Removal is `delete table`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from pe_dr.errors import CheckFailed, CommandFailed
from pe_dr.lab.live import Lab

TABLE = "pe_dr_canary"
# tmpfs on every systemd host: gone with a reboot, like the block itself
RULESET_PATH = "/run/pe-dr-canary.nft"
SET = "blocked4"
# The primary's ports an agent or a replica uses: puppetserver, PCP broker, orchestrator/Code
# Manager, PuppetDB, classifier/RBAC (real-world-findings §4.3, pe-dr-interfaces).
PRIMARY_PORTS = (8140, 8142, 8143, 8081, 4433)
MODES = ("reject", "drop")
# A TTL longer than a day is a block an admin would not expect to outlive a drill.
MAX_TTL_SECONDS = 86_400


class CanaryError(ValueError):
    """A canary block that must not be built; one sentence."""


@dataclass(frozen=True)
class Block:
    """What to block on one canary: the primary's address, the ports, the mode and the TTL."""

    primary_ip: str
    mode: str = "reject"
    ttl_seconds: int = 600
    ports: tuple[int, ...] = PRIMARY_PORTS

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.primary_ip)
        except ValueError:
            raise CanaryError(
                f"the primary's address {self.primary_ip!r} is not an IP address"
            ) from None
        if address.version != 4:
            raise CanaryError(f"the primary's address {self.primary_ip} is not IPv4")
        if self.mode not in MODES:
            raise CanaryError(f"isolation mode {self.mode!r} is neither reject nor drop")
        if isinstance(self.ttl_seconds, bool) or not isinstance(self.ttl_seconds, int):
            raise CanaryError("the fault TTL must be a whole number of seconds")
        if not 1 <= self.ttl_seconds <= MAX_TTL_SECONDS:
            raise CanaryError(f"the fault TTL {self.ttl_seconds} s is outside 1..{MAX_TTL_SECONDS}")
        if not self.ports or any(not 1 <= p <= 65535 for p in self.ports):
            raise CanaryError("the blocked ports must be 1..65535 and at least one")


def ruleset(block: Block) -> str:
    """An `nft -f` file that replaces the drill's table whole: the leading `table` makes the
    `delete` succeed on a first run, so applying it twice leaves one block (idempotent)."""
    verdict = "reject with tcp reset" if block.mode == "reject" else "drop"
    elements = ", ".join(
        f"{block.primary_ip} . {port} timeout {block.ttl_seconds}s" for port in block.ports
    )
    return (
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        f"\tset {SET} {{\n"
        f"\t\ttype ipv4_addr . inet_service\n"
        f"\t\tflags timeout\n"
        f"\t\telements = {{ {elements} }}\n"
        f"\t}}\n"
        f"\tchain output {{\n"
        f"\t\ttype filter hook output priority 0; policy accept;\n"
        f"\t\tip daddr . tcp dport @{SET} {verdict}\n"
        f"\t}}\n"
        f"}}\n"
    )


def apply_argv(path: str) -> list[str]:
    """The command that applies the ruleset file (moved to the canary over SFTP)."""
    return ["nft", "-f", path]


def remove_argv() -> list[str]:
    """The command that removes the block whole. Absent table → nft fails; see is_absent_error."""
    return ["nft", "delete", "table", "inet", TABLE]


def list_argv() -> list[str]:
    return ["nft", "-j", "list", "table", "inet", TABLE]


def is_absent_error(stderr: str) -> bool:
    """nft's answer when the table is not there (already expired tables stay; removed ones go)."""
    return "No such file or directory" in stderr


def remaining(list_json: str) -> dict[tuple[str, int], float]:
    """Seconds each blocked address . port has left, from `nft -j list table`: the evidence that
    the block is on and when the kernel will end it. An element past its TTL is absent."""
    try:
        doc = json.loads(list_json)
    except json.JSONDecodeError as exc:
        raise CanaryError(f"nft's JSON listing is not JSON: {exc.msg}") from None
    out: dict[tuple[str, int], float] = {}
    for item in doc.get("nftables", []) if isinstance(doc, dict) else []:
        nft_set = item.get("set") if isinstance(item, dict) else None
        if not isinstance(nft_set, dict) or nft_set.get("name") != SET:
            continue
        for elem in nft_set.get("elem", []):
            inner = elem.get("elem", {}) if isinstance(elem, dict) else {}
            val = inner.get("val") if isinstance(inner, dict) else None
            val = val.get("concat") if isinstance(val, dict) else None
            if not (isinstance(val, list) and len(val) == 2):
                raise CanaryError(
                    f"nft listed an element of {SET} this drill did not write: {elem!r}"
                )
            expires = inner.get("expires", inner.get("timeout"))
            if not isinstance(expires, (int, float)):
                raise CanaryError(f"nft listed an element of {SET} with no timeout: {elem!r}")
            out[(str(val[0]), int(val[1]))] = float(expires)
    return out


# --- on a canary, over SSH -------------------------------------------------------------------


def install_block(lab: Lab, canary: str, block: Block) -> dict[str, object]:
    """Cut `canary` from the primary's ports, self-expiring after the block's TTL; the kernel's
    own listing of the drill's table is the proof that every address . port is blocked."""
    host = lab.host(canary)
    host.put(RULESET_PATH, ruleset(block).encode(), mode=0o600)
    host.run(apply_argv(RULESET_PATH), root=True, timeout=60)
    left = remaining(host.run(list_argv(), root=True, timeout=60).stdout)
    wanted = {(block.primary_ip, port) for port in block.ports}
    if set(left) != wanted:
        missing = sorted(f"{ip}:{port}" for ip, port in wanted - set(left))
        raise CheckFailed(
            f"the block on {canary} lists {len(left)} of its {len(wanted)} address:port pairs "
            f"after nft applied it (missing: {', '.join(missing) or 'none'})"
        )
    return {
        "canary": lab.spec.host(canary).name,
        "mode": block.mode,
        "ports": sorted(block.ports),
        "expires_in_seconds": round(min(left.values()), 1),
    }


def remove_block(lab: Lab, canary: str) -> str:
    """Remove the drill's table from `canary`: `removed`, or `already gone` (never there, or a
    reboot took it; an expired block leaves its empty table, which this removes too)."""
    argv = remove_argv()
    result = lab.host(canary).run(argv, root=True, ok_codes=(0, 1), timeout=60)
    if result.exit_code == 0:
        return "removed"
    if is_absent_error(result.stderr):
        return "already gone"
    raise CommandFailed(canary, " ".join(argv), result.exit_code, result.stdout, result.stderr)
