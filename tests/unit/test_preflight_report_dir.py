"""Pre-flight's report-directory check on a real full disk: a 64 kB tmpfs (needs root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pe_dr.preflight import JOURNAL_BYTES, report_dir_problem

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="a packet-dropping namespace needs root, iproute2 and nftables",
)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@needs_root
def test_a_disk_too_small_for_a_journal_fails_preflight(tiny_disk: Path) -> None:
    # an empty file still fits: the old check (create a file, remove it) passed here
    (tiny_disk / "empty").touch()
    (tiny_disk / "empty").unlink()
    problem = report_dir_problem(str(tiny_disk / "reports"))
    assert problem is not None
    assert str(tiny_disk / "reports") in problem and "not writable" in problem
    assert list(tiny_disk.iterdir()) == []  # the probe is removed


def test_a_roomy_directory_passes_and_is_left_clean(tmp_path: Path) -> None:
    assert report_dir_problem(str(tmp_path / "reports")) is None
    assert list(tmp_path.iterdir()) == []
    assert JOURNAL_BYTES > 64 * 1024


@needs_netns
def test_a_running_vm_whose_ssh_port_drops_packets_fails_preflight_in_seconds() -> None:
    """Before, pre-flight took 61 s of SSH timeouts on such a lab and turned them into notes."""
    from types import SimpleNamespace

    from pe_dr import preflight
    from tests.unit.netns import dropping_host

    with dropping_host() as address:
        ssh = SimpleNamespace(host=address, port=22)
        lab = SimpleNamespace(host=lambda name: SimpleNamespace(ssh=ssh))
        problems = preflight._not_answering(lab, ["primary.vm", "replica.vm"])  # type: ignore[arg-type]
    assert problems == [
        f"{vm} is running but its SSH port {address}:22 did not answer within "
        f"{preflight.CONNECT_SECONDS:g} s (packets dropped?)"
        for vm in ("primary.vm", "replica.vm")
    ]


def test_a_running_vm_that_refuses_fails_preflight_naming_it() -> None:
    import socket
    from types import SimpleNamespace

    from pe_dr import preflight

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        ssh = SimpleNamespace(host="127.0.0.1", port=port)
        lab = SimpleNamespace(host=lambda name: SimpleNamespace(ssh=ssh))
        problems = preflight._not_answering(lab, ["primary.vm"])  # type: ignore[arg-type]
    assert len(problems) == 1
    assert (
        f"primary.vm is running but its SSH port 127.0.0.1:{port} cannot be reached" in problems[0]
    )
