"""Polling at a fixed rate: a change is seen within one interval of landing, at a bounded rate.

Probe k starts at `start + k * interval` (or at once, when probe k-1 overran its slot). So:

* detection: the first probe that starts after a change lands starts at most one interval after
  it (plus that probe's own duration until it answers);
* rate: two probes never start less than one interval apart (at most one request per interval);
* budget: no probe starts after the deadline; the last one starts at the last slot before it.

Sleeping a fixed interval *after* each probe instead would drift by the probe's duration every
round, and detect up to one interval plus two probe durations late.
"""

from __future__ import annotations

import time


class Pacer:
    """Paces a polling loop: call `wait()` after each probe that did not see the change."""

    def __init__(self, interval: float, deadline: float) -> None:
        self.interval = max(0.0, interval)
        self.deadline = deadline
        self.last_start = time.monotonic()  # the first probe starts now
        self.probes = 1

    def wait(self) -> bool:
        """Sleep until the next probe may start; False, at once, when none may start in time."""
        now = time.monotonic()
        due = max(self.last_start + self.interval, now)
        if due > self.deadline:
            return False
        if due > now:
            time.sleep(due - now)
        # the probe starts now: no sooner than one interval after the last (a late wake-up shifts
        # the grid by that much rather than crowding the next probe)
        self.last_start = max(due, time.monotonic())
        self.probes += 1
        return True
