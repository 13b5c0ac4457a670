"""A command the tests run that must succeed: its stdout, or the test fails showing both
streams."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_ok(
    argv: Sequence[Any], *, env: Mapping[str, str], timeout: float = 120, cwd: Path = REPO
) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
