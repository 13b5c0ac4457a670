"""Whether a process is still there, from Linux's /proc (proc(5)): a lab's lock names the pid of
the run holding it, and labsim's daemon is stopped by its pid."""

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


def started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), to tell it from a reused pid."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


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
    if fields is None:  # no /proc to ask: the signal found it
        return True
    if fields[0] == "Z":
        return False
    return since is None or (fields[19] if len(fields) > 19 else None) in (None, since)
