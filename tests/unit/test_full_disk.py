"""A journal that does not fit on its disk leaves no half-written file (pre-flight's own check of
the report folder: test_preflight_report_dir.py). A real full file system (a 64 KiB tmpfs, filled),
not an imitation; root only (mount)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pe_dr.report import DrillReport


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "pe-dr-full", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        filler = mount / "filler"
        with filler.open("wb", buffering=0) as out:  # fill it: no data block is left
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=30, check=False)


def test_a_journal_that_does_not_fit_leaves_no_half_written_file(full_disk: Path) -> None:
    record = DrillReport(flow="dr-drill", flow_run_id="r1", lab={"name": "lab-a"})
    record.notes = ["x" * 200_000]  # more than the disk holds
    with pytest.raises(OSError, match="No space left"):
        record.write(full_disk)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]
