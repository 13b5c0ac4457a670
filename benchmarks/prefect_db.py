"""What a fresh Prefect database costs the test suite, side by side in one run: CPU seconds
(user + sys, of the child) of `prefect server database upgrade` on a fresh SQLite database and on
one already migrated (what the suite's `prefect_home` fixture copies for each `pe-dr` command's
temporary server), two rounds each, alternating.

Usage: .venv/bin/python -m benchmarks.prefect_db
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFECT = Path(sys.executable).parent / "prefect"


def upgrade(home: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `prefect server database upgrade -y` in PREFECT_HOME `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(
        [PREFECT, "server", "database", "upgrade", "-y"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pe-dr-db-bench-") as tmp_name:
        tmp = Path(tmp_name)
        template = tmp / "template"
        upgrade(template)
        rows: dict[str, list[tuple[float, float]]] = {"fresh": [], "migrated copy": []}
        for round_ in range(2):
            fresh = tmp / f"fresh-{round_}"
            rows["fresh"].append(upgrade(fresh))
            copy = tmp / f"copy-{round_}"
            copy.mkdir()
            shutil.copyfile(template / "prefect.db", copy / "prefect.db")
            rows["migrated copy"].append(upgrade(copy))
    for name, runs in rows.items():
        cpu = sum(c for _, c in runs) / len(runs)
        wall = sum(w for w, _ in runs) / len(runs)
        print(f"{name:14s} CPU {cpu:5.1f} s   wall {wall:5.1f} s   (mean of {len(runs)})")
    saved = sum(c for _, c in rows["fresh"]) - sum(c for _, c in rows["migrated copy"])
    print(f"CPU saved per fresh database: {saved / 2:.1f} s")


if __name__ == "__main__":
    main()
