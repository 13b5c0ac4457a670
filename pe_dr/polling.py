"""Polling at a fixed rate: a change is seen within one interval of landing, at a bounded rate.

Probe k starts at `start + k * interval` (or at once, when probe k-1 overran its slot). So:

* detection: the first probe that starts after a change lands starts at most one interval after
  it (plus that probe's own duration until it answers);
* rate: two probes never start less than one interval apart (at most one request per interval);
* budget: no probe starts after the deadline; the last one starts at the last slot before it.

Sleeping a fixed interval *after* each probe instead would drift by the probe's duration every
round, and detect up to one interval plus two probe durations late.

Progress: a wait that names `what` it waits for reports, once it has lasted 10 s and then at most
every 30 s, a line "waiting for <what> <elapsed>/<budget> s" to every registered sink (the flows
layer sends it to the command line and to the Prefect run log). This is the one place that paces
those lines, for every poll of the drill.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pe_dr import fanout
from pe_dr.errors import TransientError

FIRST_PROGRESS_AFTER = 10.0  # seconds a wait lasts before it says so
PROGRESS_EVERY = 30.0  # seconds between two lines of one wait, at least

ProgressSink = Callable[[str], None]
_sinks: list[ProgressSink] = []
_sinks_lock = threading.Lock()


def add_progress_sink(sink: ProgressSink) -> None:
    with _sinks_lock:
        if sink not in _sinks:
            _sinks.append(sink)


def remove_progress_sink(sink: ProgressSink) -> None:
    with _sinks_lock:
        if sink in _sinks:
            _sinks.remove(sink)


def report_progress(line: str) -> None:
    """Give `line` to every sink; a failing sink never fails the wait it reports on."""
    with _sinks_lock:
        sinks = list(_sinks)
    for sink in sinks:
        with contextlib.suppress(Exception):
            sink(line)


class Progress:
    """The progress lines of one wait: the first after `first_after` s, then every `every` s."""

    def __init__(
        self,
        line: Callable[[float], str],
        since: float,
        *,
        first_after: float = FIRST_PROGRESS_AFTER,
        every: float = PROGRESS_EVERY,
    ) -> None:
        self.line = line
        self.since = since
        self.next_at = since + first_after
        self.every = every
        self.lines = 0

    def tick(self, now: float | None = None) -> bool:
        """Report a line if one is due at `now`; True when it did."""
        now = time.monotonic() if now is None else now
        if now < self.next_at:
            return False
        report_progress(self.line(now - self.since))
        self.lines += 1
        self.next_at = now + self.every
        return True


def waiting_line(what: str, budget: float) -> Callable[[float], str]:
    return lambda elapsed: f"waiting for {what} {elapsed:.0f}/{budget:.0f} s"


class Pacer:
    """Paces a polling loop: call `wait()` after each probe that did not see the change.

    With `what`, the wait reports its progress (see the module's docstring), measured from
    `since` (default: now) against the deadline."""

    def __init__(
        self,
        interval: float,
        deadline: float,
        *,
        what: str | None = None,
        since: float | None = None,
    ) -> None:
        self.interval = max(0.0, interval)
        self.deadline = deadline
        self.last_start = time.monotonic()  # the first probe starts now
        self.probes = 1
        start = self.last_start if since is None else since
        self.progress = (
            Progress(waiting_line(what, max(0.0, deadline - start)), start)
            if what is not None
            else None
        )

    def wait(self) -> bool:
        """Sleep until the next probe may start; False, at once, when none may start in time."""
        now = time.monotonic()
        due = max(self.last_start + self.interval, now)
        if due > self.deadline:
            return False
        if self.progress is not None:
            self.progress.tick(now)  # the probe that just ended did not see it: still waiting
        while due > now:
            wake = due if self.progress is None else min(due, self.progress.next_at)
            fanout.sleep(wake - now, time.sleep)  # (a worker whose caller left stops here)
            now = time.monotonic()
            if self.progress is not None and now < due:
                self.progress.tick(now)
        # the probe starts now: no sooner than one interval after the last (a late wake-up shifts
        # the grid by that much rather than crowding the next probe)
        self.last_start = max(due, time.monotonic())
        self.probes += 1
        return True


T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    what: str,
) -> T:
    """Poll `probe` until it returns a value; TransientError naming `what` when `timeout` passes.

    Probes start at a fixed rate (pe_dr.polling): within one interval of a change, never two
    within one interval."""
    pace = Pacer(interval, time.monotonic() + timeout, what=what)
    while True:
        value = probe()
        if value is not None:
            return value
        if not pace.wait():
            raise TransientError(f"timed out after {timeout:.0f} s waiting for {what}")
