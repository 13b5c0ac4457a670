"""A stop signal this process received (SIGINT from Ctrl-C, SIGTERM), and what reacts to it.

Whoever sees the signal first reports it with `begin`: the command line's signal handler, or the
flows' recorder when Prefect's engine turned a SIGTERM into an exception. Parts that hold
something that would delay the stop subscribe with `on_stop` (every `vagrant` command in flight
is stopped, so no thread waits minutes for one). Only the first signal counts: what must still run
after it (starting a halted primary again, writing the journal) runs `shielded`, so a second one
does not cut it short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar


@dataclass(frozen=True)
class Stop:
    signum: int
    at: float  # time.monotonic() when it arrived
    wall: str  # UTC, for the journal

    @property
    def name(self) -> str:
        return describe(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal stopped


def describe(signum: int) -> str:
    if signum == signal.SIGINT:
        return "SIGINT (Ctrl-C)"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_lock = threading.Lock()
_stop: Stop | None = None
_subscribers: list[Callable[[Stop], None]] = []
_repeat_subscribers: list[Callable[[int], None]] = []
_F = TypeVar("_F", bound=Callable[..., Any])


def begin(signum: int) -> Stop:
    """Record a stop signal and return the first one. The first also tells the subscribers and
    makes every later SIGINT and SIGTERM of this process a no-op (recorded, never raised), so the
    clean-up it starts runs to its end; a later one tells the repeat subscribers."""
    global _stop
    with _lock:
        first = _stop is None
        if first:
            _stop = Stop(
                signum,
                time.monotonic(),
                datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            )
        stop, subscribers, repeats = _stop, list(_subscribers), list(_repeat_subscribers)
    assert stop is not None
    if first:
        _absorb_later_signals()
        for fn in subscribers:
            with contextlib.suppress(Exception):
                fn(stop)
    else:
        for repeat in repeats:
            with contextlib.suppress(Exception):
                repeat(signum)
    return stop


def seen(signum: int) -> Stop:
    """Report a stop met as an exception (KeyboardInterrupt, Prefect's TerminationSignal): the
    stop already recorded when the signal handler saw it first, else a new one. Not a second
    signal: one Ctrl-C once printed "already stopping" twice, from the two places that met it."""
    stop = current()
    return stop if stop is not None else begin(signum)


def _absorb(signum: int, frame: object) -> None:
    begin(signum)


def _absorb_later_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, _absorb)


def current() -> Stop | None:
    with _lock:
        return _stop


def reset() -> None:
    """Forget a stop (a new drill in a process that outlived one, e.g. a test session)."""
    global _stop, _effect
    with _lock:
        _stop = None
        _effect = PLAIN_STOP


PLAIN_STOP = "the step under way is stopped and the journal is written"
_effect = PLAIN_STOP


def set_stop_effect(text: str) -> None:
    """What a stop does now, said when one begins: the part of the drill under way sets it (a
    primary the failover drill halted is started again; one a promotion destroyed is not)."""
    global _effect
    with _lock:
        _effect = text


def stop_effect() -> str:
    with _lock:
        return _effect


def _subscribe(subscribers: list[_F], fn: _F) -> None:
    with _lock:
        if fn not in subscribers:
            subscribers.append(fn)


def _unsubscribe(subscribers: list[_F], fn: _F) -> None:
    with _lock:
        if fn in subscribers:
            subscribers.remove(fn)


def on_stop(fn: Callable[[Stop], None]) -> None:
    _subscribe(_subscribers, fn)


def off_stop(fn: Callable[[Stop], None]) -> None:
    _unsubscribe(_subscribers, fn)


def on_repeat(fn: Callable[[int], None]) -> None:
    """`fn(signum)` for every stop signal after the first (e.g. to say that it changes nothing)."""
    _subscribe(_repeat_subscribers, fn)


def off_repeat(fn: Callable[[int], None]) -> None:
    _unsubscribe(_repeat_subscribers, fn)


def signal_of(exc: BaseException) -> int | None:
    """The stop signal an exception stands for: KeyboardInterrupt is SIGINT; Prefect's
    TerminationSignal (and anything else with a `signal` number) is that signal. So is an error
    raised while one was handled: a SIGTERM landing as Prefect creates a task run ends in its
    ValueError("Task run is not set"), the signal as its context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return int(signal.SIGINT)
        number = getattr(current, "signal", None)
        if isinstance(number, int) and not isinstance(current, Exception):
            return number
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run the block to its end through SIGINT and SIGTERM: for the clean-up that must finish
    (starting the halted primary again, writing the journal, giving the lab's lock back). A
    signal arriving meanwhile is recorded; if it is the first stop of the process, it is raised
    once the block is done (as KeyboardInterrupt for SIGINT, else as `terminated(signum)`), unless
    an exception already leaves the block. Only the main thread takes signals; elsewhere this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = current()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, _absorb)
    try:
        yield
    finally:
        stop = current()
        began_inside = before is None and stop is not None
        if not began_inside:  # (after a stop began, later signals stay absorbed)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if began_inside and stop is not None:
        raise KeyboardInterrupt if stop.signum == signal.SIGINT else terminated(stop.signum)


# Set by the flows layer to Prefect's TerminationSignal (core code does not import Prefect).
terminated: Callable[[int], BaseException] = lambda signum: SystemExit(128 + signum)  # noqa: E731
