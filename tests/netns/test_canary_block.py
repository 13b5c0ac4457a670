"""The canary block for real: the product's nftables ruleset applied inside a network namespace
this test makes (veth, 10.250.0.0/30), never on the machine's own firewall."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pe_dr.steps.canary import Block, list_argv, remaining, remove_argv, ruleset

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None,
    reason="needs root, ip and nft to make network namespaces",
)
CANARY_IP, PRIMARY_IP = "10.250.0.1", "10.250.0.2"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    canary, primary = f"pedr-c-{tag}", f"pedr-p-{tag}"
    try:
        for ns in (canary, primary):
            assert _run("ip", "netns", "add", ns).returncode == 0
        assert (
            _run(
                "ip",
                "-n",
                canary,
                "link",
                "add",
                "v0",
                "type",
                "veth",
                "peer",
                "name",
                "v1",
                "netns",
                primary,
            ).returncode
            == 0
        )
        for ns, dev, ip in ((canary, "v0", CANARY_IP), (primary, "v1", PRIMARY_IP)):
            assert _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev).returncode == 0
            assert _run("ip", "-n", ns, "link", "set", dev, "up").returncode == 0
            assert _run("ip", "-n", ns, "link", "set", "lo", "up").returncode == 0
        yield canary, primary
    finally:
        for ns in (canary, primary):
            _run("ip", "netns", "del", ns)  # the table dies with its namespace


def _listen(primary: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('{PRIMARY_IP}',{port}));s.listen(8);print('up',flush=True)\n"
        "while True: s.accept()[0].close()"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", primary, "python3", "-c", code], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
    return proc


def _connect(canary: str, port: int) -> str:
    code = (
        "import socket\ns=socket.socket();s.settimeout(1.5)\n"
        f"try:\n s.connect(('{PRIMARY_IP}',{port}));print('ok')\n"
        "except ConnectionRefusedError:print('refused')\n"
        "except TimeoutError:print('timeout')"
    )
    return _run("ip", "netns", "exec", canary, "python3", "-c", code).stdout.strip()


def _apply(canary: str, block: Block, tmp_path: Path) -> None:
    path = tmp_path / "canary.nft"
    path.write_text(ruleset(block))
    proc = _run("ip", "netns", "exec", canary, "nft", "-f", str(path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("mode", "seen"), [("reject", "refused"), ("drop", "timeout")])
def test_block_refuses_or_hangs_only_the_primarys_ports(
    pair: tuple[str, str], tmp_path: Path, mode: str, seen: str
) -> None:
    canary, primary = pair
    servers = [_listen(primary, 8140), _listen(primary, 9000)]
    try:
        assert _connect(canary, 8140) == "ok"
        _apply(canary, Block(PRIMARY_IP, mode=mode, ttl_seconds=600), tmp_path)
        _apply(canary, Block(PRIMARY_IP, mode=mode, ttl_seconds=600), tmp_path)  # idempotent
        assert _connect(canary, 8140) == seen
        assert _connect(canary, 9000) == "ok"  # not a primary port: passes
        left = remaining(_run("ip", "netns", "exec", canary, *list_argv()).stdout)
        assert len(left) == 5 and all(0 < s <= 600 for s in left.values())
        assert _run("ip", "netns", "exec", canary, *remove_argv()).returncode == 0
        assert _connect(canary, 8140) == "ok"
    finally:
        for s in servers:
            s.kill()
            s.wait(timeout=10)


def _seconds_until_open(canary: str, start: float, what: str) -> float:
    """Seconds from `start` until 8140 answers through the block again; `what` outliving its
    3 s TTL by 7 s fails the test."""
    deadline = start + 10
    while _connect(canary, 8140) != "ok":
        assert time.monotonic() < deadline, f"{what} outlived its TTL by 7 s"
        time.sleep(0.2)
    return time.monotonic() - start


def test_block_expires_by_itself_with_no_process(pair: tuple[str, str], tmp_path: Path) -> None:
    canary, primary = pair
    server = _listen(primary, 8140)
    try:
        _apply(canary, Block(PRIMARY_IP, mode="reject", ttl_seconds=3), tmp_path)
        start = time.monotonic()
        assert _connect(canary, 8140) == "refused"
        gone = _seconds_until_open(canary, start, "the block")
        print(f"block gone {gone:.2f} s after apply (TTL 3 s)")
        assert remaining(_run("ip", "netns", "exec", canary, *list_argv()).stdout) == {}
    finally:
        server.kill()
        server.wait(timeout=10)


def test_block_of_a_killed_drill_expires_within_its_ttl(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    canary, primary = pair
    server = _listen(primary, 8140)
    path = tmp_path / "canary.nft"
    path.write_text(ruleset(Block(PRIMARY_IP, mode="drop", ttl_seconds=3)))
    # A stand-in drill: applies the block, says so, then would wait to remove it; it is SIGKILLed.
    code = (
        f"import subprocess,time;subprocess.run(['nft','-f','{path}'],check=True);"
        "print('on',flush=True);time.sleep(600)"
    )
    drill = subprocess.Popen(
        ["ip", "netns", "exec", canary, "python3", "-c", code], stdout=subprocess.PIPE
    )
    try:
        assert drill.stdout is not None and drill.stdout.readline().strip() == b"on"
        start = time.monotonic()
        drill.kill()
        drill.wait(timeout=10)
        assert _connect(canary, 8140) == "timeout"
        gone = _seconds_until_open(canary, start, "a killed drill's block")
        print(f"killed drill's block gone {gone:.2f} s after SIGKILL (TTL 3 s)")
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait(timeout=10)
        server.kill()
        server.wait(timeout=10)
