"""What a process of the drill pays to start, with the venv's bytecode and without it, side by
side in one run: CPU seconds (user + sys) of importing what each kind of process imports. "without"
points Python at an empty bytecode cache (`-X pycache_prefix`), as every process had it where
PYTHONDONTWRITEBYTECODE is set and nothing was compiled at install (`make venv` now compiles).

Usage: .venv/bin/python -m benchmarks.startup
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import sysconfig
import tempfile

PROCESSES = {
    "pe-dr command": "import pe_dr_cli.main",
    "flow run (drill tasks)": "import flows.dr_drill",
    "Prefect server": "import prefect.server.api.server",
    "labsim command": "import labsim.cli",
}
ROUNDS = 2


def cpu_of(code: str, *options: str) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *options, "-c", code], env=env, check=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    print(f"{'process':24s} {'bytecode':>9s} {'none':>9s}  ratio   (CPU s, mean of {ROUNDS})")
    with tempfile.TemporaryDirectory(prefix="pe-dr-nopyc-") as empty:
        stdlib = sysconfig.get_paths()["stdlib"]
        subprocess.run(
            [sys.executable, "-X", f"pycache_prefix={empty}", "-m", "compileall", "-q", stdlib],
            check=False,  # a few test files of the standard library do not compile
            timeout=900,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, code in PROCESSES.items():
            compiled = none = 0.0
            for _ in range(ROUNDS):
                compiled += cpu_of(code)
                none += cpu_of(code, "-X", f"pycache_prefix={empty}")
            compiled, none = compiled / ROUNDS, none / ROUNDS
            print(f"{name:24s} {compiled:8.2f}s {none:8.2f}s  {none / compiled:4.1f}x")


if __name__ == "__main__":
    main()
