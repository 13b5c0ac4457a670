"""`python -m deployments.die_with_parent PID COMMAND...`: run COMMAND so that it gets
SIGTERM the moment process PID (its parent) dies, however it dies (even `kill -9`).

pe-dr starts Prefect's temporary API server through this, in a process group of its own so that a
terminal's Ctrl-C (SIGINT to the foreground group) does not kill the server while the drill still
needs it to record how the run ended. Outside the drill's group, the server could outlive a killed
drill; the parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`, which survives `exec`) prevents
that. Elsewhere the server is still stopped when pe-dr exits normally.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: python -m deployments.die_with_parent PID COMMAND...\n")
        return 2
    parent, command = int(argv[0]), argv[1:]
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        return 0
    os.execvp(command[0], command)  # noqa: S606 (running the given argv is the point)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
