"""Whether a process is still there, from Linux's /proc (proc(5)): a lab's lock names the pid of
the run holding it."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and ')')."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def _start(fields: list[str]) -> str | None:
    return fields[19] if len(fields) > 19 else None  # starttime, in clock ticks since boot


def started(pid: int) -> str | None:
    """When process `pid` started, to tell it from a later one given the same pid."""
    fields = _stat(pid)
    return _start(fields) if fields is not None else None


def alive(pid: int, since: str | None = None) -> bool:
    """Process `pid` runs (not a zombie: it exited and waits for its parent to read its status)
    and, with `since` (from `started`), is the process that started then, not a later one that
    was given the same pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    fields = _stat(pid)
    if not fields:  # no /proc to ask: the signal found it
        return True
    if fields[0] == "Z":
        return False
    return since is None or _start(fields) in (None, since)
