"""What the Prefect layer plugs into the Prefect-free core, in this one place, once per process:
every root run calls `wire` first (flows.common), so whatever started it (a deployment's flow
process, `pe-dr`, a test) has it before a step runs, and importing a module changes nothing."""

from __future__ import annotations

import threading

from prefect.exceptions import TerminationSignal

from pe_dr import interrupts, polling
from pe_dr.secrets import register_provider

_wired = threading.Event()


def wire() -> None:
    if _wired.is_set():
        return
    from flows.common import say

    # long waits in the core (pe_dr.polling) report their progress as the chapters' lines
    polling.add_progress_sink(say)
    # a SIGTERM that arrived inside a shielded clean-up is raised afterwards as Prefect raises it
    interrupts.terminated = _termination_signal
    # secrets: a Prefect Secret block first, then the environment
    register_provider(prefect_secret_block)
    _wired.set()


def _termination_signal(signum: int) -> BaseException:
    return TerminationSignal(signal=signum)


def prefect_secret_block(name: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name).get())  # type: ignore[union-attr]
    except ValueError:
        return None
