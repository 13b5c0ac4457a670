"""How `pe-dr drill` and `pe-dr retry` stop on Ctrl-C (SIGINT to the whole process group) and
SIGTERM, within `PE_DR_STOP_GRACE_SECONDS` (25 s):

1. Prefect's temporary API server runs in a process group of its own (`local_server`), so the
   signal does not take it away while the run still has to record how it ended; it stops when
   pe-dr exits, and with it if pe-dr is killed (deployments.die_with_parent).
2. The first signal interrupts the drill where it is (KeyboardInterrupt for SIGINT, Prefect's
   TerminationSignal for SIGTERM, both raised by our handler: `take_back_sigterm`), and every
   `vagrant` command in flight is stopped; work on several agents at once is left, not waited
   for (pe_dr.fanout). The failover drill's clean-up starts a halted primary again,
   the journal is written, Prefect's engine marks the runs Crashed. Later signals are absorbed
   (pe_dr.interrupts: a second Ctrl-C must not leave the primary down) and said to be.
3. A watchdog bounds it all: if pe-dr has not exited `PE_DR_STOP_GRACE_SECONDS` (25 s) after the
   first signal, it writes the open journals, marks the runs Crashed, stops the server and exits.
   A `vagrant up` still starting the primary then goes on by itself (it runs in its own session),
   and the next drill or Retry waits for it.
4. `mark_unfinished` then makes sure no run of the drill is left Running, whatever part of the
   engine the signal landed in, and the exit code is 128 + the signal (130, 143).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pe_dr import interrupts
from pe_dr.settings import settings


def grace_seconds() -> float:
    return settings().stop_grace_seconds


_server: Any = None  # Prefect's SubprocessASGIServer, when pe-dr started one
_last_resort: list[Callable[[interrupts.Stop], None]] = []


def _handler(signum: int, frame: object) -> None:
    if interrupts.current() is not None:
        return  # e.g. Prefect's engine re-sending its SIGTERM once it has recorded the crash
    interrupts.begin(signum)  # from now on later signals are absorbed (and said to be)
    raise KeyboardInterrupt if signum == signal.SIGINT else _terminated(signum)


def take_back_sigterm() -> None:
    """While a flow runs, Prefect's engine puts its own SIGTERM handler in place of ours (it
    raises TerminationSignal), so a SIGTERM began the stop only once that exception reached the
    flow's clean-up: no bound counted and no `vagrant` command was stopped until then, and a
    wait that held the unwinding (threads joined after a host went silent) held the drill for
    minutes while a SIGINT kept the bound (issue 24.3). Called as the run starts, inside the
    engine: ours comes back, raising the same exception, so both signals begin the stop as they
    arrive. (Prefect's engine puts back what it found when the run ends: ours.) The command line
    runs flows without a runner, so no runner's cancellation relies on Prefect's handler here."""
    with contextlib.suppress(ValueError):  # (not the main thread: signals are not ours to take)
        if interrupts.current() is None and signal.getsignal(signal.SIGTERM) is not _handler:
            signal.signal(signal.SIGTERM, _handler)


def _repeat(signum: int) -> None:
    stop = interrupts.current()
    if stop is not None and signum == signal.SIGINT:
        remaining = max(0.0, stop.at + grace_seconds() - time.monotonic())
        _err(f"pe-dr: already stopping ({stop.name}); at most {remaining:.0f} s more")


def _terminated(signum: int) -> BaseException:
    from prefect.exceptions import TerminationSignal

    return TerminationSignal(signal=signum)


def _err(text: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def announcement(stop: interrupts.Stop) -> str:
    """The line a stop begins with: what it does in the part of the drill under way."""
    return (
        f"pe-dr: {stop.name}: stopping within {grace_seconds():.0f} s: "
        f"{interrupts.stop_effect()} (another Ctrl-C changes nothing)"
    )


def _announce(stop: interrupts.Stop) -> None:
    _err(announcement(stop))
    threading.Thread(target=_watchdog, args=(stop,), name="pe-dr-stop", daemon=True).start()


def _watchdog(stop: interrupts.Stop) -> None:
    time.sleep(max(0.0, stop.at + grace_seconds() - time.monotonic()))
    _err(f"pe-dr: not stopped {grace_seconds():.0f} s after {stop.name}: leaving now")
    for fn in _last_resort:
        with contextlib.suppress(Exception):
            fn(stop)
    stop_local_server()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(stop.exit_code)


@contextlib.contextmanager
def handling(last_resort: Callable[[interrupts.Stop], None] | None = None) -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above for the block (from the main thread); `last_resort`
    runs in the watchdog. The previous handlers come back afterwards (pe-dr's `main` also runs
    inside test processes); a watchdog already counting goes on until the process exits."""
    interrupts.on_stop(_announce)
    interrupts.on_repeat(_repeat)
    if last_resort is not None:
        _last_resort.append(last_resort)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        if interrupts.current() is None:  # after a stop, later signals stay absorbed to the end
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        interrupts.off_stop(_announce)
        interrupts.off_repeat(_repeat)
        if last_resort is not None:
            _last_resort.remove(last_resort)


def start_local_server() -> None:
    """Start Prefect's temporary API server (the one it would start on first use) in a process
    group of its own; nothing when PREFECT_API_URL names a server."""
    global _server
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    from prefect.server.api import server as asgi

    instance = asgi.SubprocessASGIServer()  # the instance Prefect's client will find running
    if instance.running:
        return
    original = instance._run_uvicorn_command

    def in_own_group() -> Any:
        real = asgi.subprocess
        asgi.subprocess = _OwnGroup(real)  # type: ignore[assignment]
        try:
            return original()
        finally:
            asgi.subprocess = real

    instance._run_uvicorn_command = in_own_group  # type: ignore[method-assign]
    instance.start()
    _server = instance


class _OwnGroup:
    """`subprocess` as Prefect's server module uses it, but Popen starts the server through
    die_with_parent and in a new process group."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args: list[str], **kwargs: Any) -> Any:  # the name Prefect calls
        guard = [sys.executable, "-m", "deployments.die_with_parent", str(os.getpid())]
        return self._real.Popen([*guard, *args], process_group=0, **kwargs)


def server_pid() -> int | None:
    process = getattr(_server, "server_process", None)
    return int(process.pid) if process is not None else None


def stop_local_server() -> None:
    if _server is not None:
        with contextlib.suppress(Exception):
            _server.stop()


def mark_unfinished(run_ids: list[str], stop: interrupts.Stop | None) -> list[str]:
    """Set every flow run of `run_ids` (and their task runs) that is not in a final state to
    Crashed, so that none stays Running; returns the ids it changed."""
    if not run_ids:
        return []
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.states import Crashed

    why = f"stopped by {stop.name}" if stop else "its process ended while it ran"
    message = f"pe-dr: {why}; resume it with Retry (pe-dr retry)"
    changed = []
    ids = [UUID(r) for r in run_ids]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        for run in runs:
            if run.state is None or not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                changed.append(str(run.id))
        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids))
        )
        for task_run in tasks:
            if task_run.state is None or not task_run.state.is_final():
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    return changed
