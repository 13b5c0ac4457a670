"""A packet-dropping host for tests: a network namespace this process makes, joined to the root
namespace by a veth pair on 10.251.x.0/30, with an nftables input policy of drop inside it.
Deleting the namespace deletes the pair and the rules with it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def dropping_host() -> Iterator[str]:
    """Yield the address of a host that drops every packet sent to it (needs root)."""
    tag = os.getpid() % 250
    ns, outer, inner = f"pedr-drop-{os.getpid()}", f"pdo{os.getpid()}", f"pdi{os.getpid()}"
    here, there = f"10.251.{tag}.1", f"10.251.{tag}.2"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        _run("ip", "addr", "add", f"{here}/30", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "-n", ns, "addr", "add", f"{there}/30", "dev", inner)
        _run("ip", "-n", ns, "link", "set", inner, "up")
        _run("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "pedr")
        _run(
            "ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "pedr", "in",
            "{ type filter hook input priority 0; policy drop; }",
        )  # fmt: skip
        yield there
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
