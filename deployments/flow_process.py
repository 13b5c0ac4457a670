"""`python -m deployments.flow_process`: how a process worker starts a pe-dr flow run (the
`command` of every deployment in prefect.yaml): Prefect's engine (`python -m prefect.engine`) as
a child in a process group of its own, with SIGINT and SIGTERM passed on to it once, and this
process's exit status being the child's.

Why: Prefect 3.9's process worker, when it is stopped (SIGTERM or Ctrl-C), SIGKILLs the process
it started for each flow run, at once (measured: 20 ms after the signal). A flow run killed like
that cannot start a primary it halted, write its journal or record how it ended: its run stays
Running and the UI offers no Retry. Started through this process instead, the flow run outlives
it; it sees its parent go (flows.common.watch_parent) and stops the way a SIGTERM stops
it: the primary is started again, the journal written, the run ends Crashed, and a Retry resumes it.
Cancelling a run (UI, `prefect flow-run cancel`) still works: the worker's SIGTERM is passed on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    child = subprocess.Popen([sys.executable, "-m", "prefect.engine", *argv], process_group=0)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    code = child.wait()
    if code < 0:  # killed by a signal: end the same way, so the worker reads the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
