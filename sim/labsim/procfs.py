"""The processes running here, from /proc (proc(5)): labsim's daemon is stopped with everything
in its session, and tests prove a drill leaves no process behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def live() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every process but the
    zombies (exited; only their parent's wait is missing). Fields: 0 state, 1 ppid, 2 process
    group, 3 session."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] != "Z":
            yield int(entry.name), fields
