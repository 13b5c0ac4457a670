"""A flow-run process whose reader went away (its worker killed) goes on logging to its console
through Prefect's own console handler: with pe_dr.stdio it survives, without it rich's broken
pipe handling ends it with SystemExit(1) (what cut the failover's rollback short)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import logging, sys
from prefect.logging.handlers import PrefectConsoleHandler

log = logging.getLogger("pe-dr-test-console")
log.addHandler(PrefectConsoleHandler())  # on sys.stderr, as Prefect's logging.yml sets it up
log.propagate = False
if sys.argv[1] == "survive":
    from pe_dr.stdio import survive_closed_output
    survive_closed_output()
    survive_closed_output()  # a second call wraps nothing twice
    assert not isinstance(sys.stdout._stream, type(sys.stdout)), "wrapped twice"
print("ready", flush=True)
sys.stdin.read()  # until the reader has closed its ends of stdout and stderr
for n in range(100):
    log.warning("a line nobody reads %d", n)
print("and a print", flush=True)
with open(sys.argv[2], "w") as fh:
    fh.write("went on")
"""


def _run_with_reader_gone(mode: str, tmp_path: Path) -> tuple[int, Path]:
    done = tmp_path / f"{mode}.done"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(done)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()
        return proc.wait(timeout=60), done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("mode", "code", "went_on"),
    [("survive", 0, True), ("as-prefect-has-it", 1, False)],
)
def test_a_process_whose_reader_went_away_goes_on_only_when_it_survives_closed_output(
    tmp_path: Path, mode: str, code: int, went_on: bool
) -> None:
    exit_code, done = _run_with_reader_gone(mode, tmp_path)
    assert exit_code == code
    assert done.exists() is went_on
