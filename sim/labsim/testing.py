"""Test and benchmark helpers: run a lab for the duration of a `with` block, walk a process
tree, migrate a Prefect database once for many servers."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsim import procfs
from pe_dr import processes


@dataclass
class LabHandle:
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec_path(self) -> Path:
        return self.state_dir / "lab.toml"

    def _cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labsim.cli", *args, "--state", str(self.state_dir)],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def journal(self) -> list[dict[str, Any]]:
        path = self.state_dir / "journal.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def fault_add(self, spec: str) -> None:
        self._cli("fault", "add", spec)

    def fault_clear(self) -> None:
        self._cli("fault", "clear")

    def secrets(self) -> list[str]:
        out = self._cli("secrets", "--json").stdout
        return [s["value"] for s in json.loads(out)]

    def status(self) -> dict[str, str]:
        out = self._cli("status", "--json").stdout
        return {vm["name"]: vm["state"] for vm in json.loads(out)}

    def addresses(self) -> dict[str, str]:
        out = self._cli("status", "--json").stdout
        return {vm["name"]: vm["address"] for vm in json.loads(out)}

    def environ(self) -> dict[str, str]:
        """os.environ overlaid with the lab's exports."""
        return {**os.environ, **self.env}


def parse_exports(text: str, base_path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        key, _, value = line[len("export ") :].partition("=")
        if key == "PATH":
            value = value.replace('"$PATH"', base_path).replace("$PATH", base_path)
            env[key] = "".join(shlex.split(value))
        else:
            env[key] = shlex.split(value)[0] if value else ""
    return env


@contextlib.contextmanager
def running_lab(
    state_dir: Path,
    *,
    faults: Iterable[str] = (),
    time_scale: float = 0.001,
    agents: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[LabHandle]:
    """`labsim up` for the duration of the block; `labsim down` always runs on exit."""
    args = [
        sys.executable,
        "-m",
        "labsim.cli",
        "up",
        "--state",
        str(state_dir),
        "--time-scale",
        str(time_scale),
        "--agents",
        str(max(agents, 1)),
    ]
    for f in faults:
        args += ["--fault", f]
    handle = LabHandle(Path(state_dir))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"labsim up failed ({proc.returncode}): {proc.stderr.strip()}")
        handle.env = parse_exports(proc.stdout, os.environ.get("PATH", ""))
        for key in ("PE_CONSOLE_PASSWORD", "GITLAB_ROOT_PASSWORD"):
            if key not in handle.env and env and key in env:
                handle.env[key] = env[key]
            elif key not in handle.env and key in os.environ:
                handle.env[key] = os.environ[key]
        yield handle
    finally:
        subprocess.run(
            [sys.executable, "-m", "labsim.cli", "down", "--state", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def process_tree(pid: int) -> set[int]:
    """`pid` and every process below it (from /proc), e.g. a drill's Prefect server."""
    children: dict[int, list[int]] = {}
    for child, fields in procfs.live():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited: only its parent's wait is missing)."""
    return {pid for pid in pids if processes.alive(pid)}


def migrate_prefect_database(**settings: str) -> None:
    """`prefect server database upgrade` with these PREFECT_ settings (PREFECT_HOME, or the
    database URL): a fresh database costs each server that migrates it about 10 s of CPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(settings)
    done = subprocess.run(
        [Path(sys.executable).parent / "prefect", "server", "database", "upgrade", "-y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrating the Prefect database failed: {done.stdout}{done.stderr}")
