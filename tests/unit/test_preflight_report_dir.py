"""Pre-flight's report-directory check on a real full disk: a 64 kB tmpfs (needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pe_dr.preflight import PROBE_BYTES, report_dir_problem

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


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
    assert PROBE_BYTES > 64 * 1024
