"""Work on several VMs at once that the caller can walk away from.

A ThreadPoolExecutor joins its threads when its block ends and again at interpreter exit. So a
stop signal that lands while one of them waits on a VM whose host drops packets (an SSH connect,
a command on a connection that went silent) held the drill until that wait ended, minutes past
the stop's bound: the rollback that starts the primary again never ran, and SIGTERM was honoured
172-268 s late (issue 24.3). Here the threads are daemons: the caller waits for their results,
and when it leaves early (a stop signal, a timeout) they are told (`abandoned()`), not waited for,
and not kept alive by them at exit. Waits that a worker makes (pe_dr.polling, pe_dr.lab.host)
end soon after, so they stop acting on the lab.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_local = threading.local()
_WAKE = 0.5  # how often the caller's wait looks up (a signal handler runs between looks)


class Abandoned(Exception):
    """Raised in a worker whose caller left: no one reads its result."""


def _event() -> threading.Event | None:
    return getattr(_local, "abandoned", None)


def abandoned() -> bool:
    """This thread is a worker whose caller left (always False outside a worker)."""
    event = _event()
    return event is not None and event.is_set()


def check() -> None:
    """Raise Abandoned in a worker whose caller left."""
    if abandoned():
        raise Abandoned("the caller left")


def sleep(seconds: float, outside: Callable[[float], None] = time.sleep) -> None:
    """Sleep, cut short (Abandoned) in a worker whose caller leaves meanwhile; outside a worker
    `outside(seconds)`."""
    event = _event()
    if event is None:
        outside(max(0.0, seconds))
        return
    if event.wait(max(0.0, seconds)):
        raise Abandoned("the caller left")


def each(items: Sequence[T], work: Callable[[T], R], *, limit: int) -> list[R]:
    """`work(item)` for every item, at most `limit` at once, results in the items' order; the
    first error (in that order) is raised once all ended. If the caller is interrupted while it
    waits, the workers are abandoned and the interruption goes on at once."""
    results: list[R | None] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)
    left = threading.Semaphore(0)
    gone = threading.Event()
    queue = list(range(len(items)))
    lock = threading.Lock()

    def worker() -> None:
        _local.abandoned = gone
        while True:
            with lock:
                if not queue or gone.is_set():
                    return
                index = queue.pop(0)
            try:
                results[index] = work(items[index])
            except BaseException as exc:  # handed to the caller
                errors[index] = exc
            left.release()

    try:  # (a stop while the workers start leaves the started ones too)
        for n in range(max(1, min(limit, len(items)))):
            threading.Thread(target=worker, name=f"pe-dr-fan-out-{n}", daemon=True).start()
        for _ in items:
            while not left.acquire(timeout=_WAKE):
                pass
    except BaseException:
        gone.set()
        raise
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]
