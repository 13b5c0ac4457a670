"""pe_dr.fanout: a caller interrupted while its workers wait leaves them, and they are told."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from pe_dr import fanout


def test_results_keep_the_order_and_the_first_error_is_raised() -> None:
    assert fanout.each([3, 1, 2], lambda n: n * 10, limit=2) == [30, 10, 20]

    def work(n: int) -> int:
        if n % 2:
            raise ValueError(f"odd {n}")
        return n

    with pytest.raises(ValueError, match="odd 1"):
        fanout.each([0, 1, 2, 3], work, limit=4)


def test_an_interrupted_caller_leaves_its_workers_and_they_are_told() -> None:
    """A ThreadPoolExecutor joined its workers here: a stop signal waited for each wait on a
    silent host to end (issue 24.3)."""
    waiting = threading.Barrier(3, timeout=30)
    told: list[str] = []

    def work(name: str) -> str:
        waiting.wait()
        try:
            fanout.sleep(600)  # a wait on a host that never answers
        except fanout.Abandoned:
            told.append(name)
            raise
        return name

    def interrupt() -> None:
        waiting.wait()
        _thread.interrupt_main()  # KeyboardInterrupt in the caller, as Ctrl-C does

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        fanout.each(["a", "b"], work, limit=2)
    deadline = time.monotonic() + 30
    while len(told) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(told) == ["a", "b"]
    assert not fanout.abandoned()  # the caller's thread is no worker


def test_outside_a_worker_sleep_is_the_given_sleep() -> None:
    slept: list[float] = []
    fanout.sleep(2.5, slept.append)
    fanout.check()  # never raises outside a worker
    assert slept == [2.5]
