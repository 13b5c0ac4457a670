"""The lab's clock and journal: every modelled duration (`time_scale` real seconds per modelled
one), the waits that `slow:` faults lengthen, and the journal each simulated operation writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from labsim.faults import FaultTable
    from labsim.lab import Lab

DURATIONS = {
    "install.primary": 1200.0,
    "install.replica": 480.0,
    "install.agent": 180.0,
    "install.gitlab": 900.0,
    "box": 300.0,  # downloading and importing ubuntu/jammy64 (~600 MB) on a first run
    "boot": 60.0,
    "halt": 10.0,
    "hostonly": 5.0,  # VBoxManage hostonlyif create, on the lab's first `vagrant up`
    "destroy": 5.0,
    "provision": 900.0,
    "enable": 120.0,
    "promote": 1200.0,
    "forget": 60.0,
    "agent": 30.0,
    "deploy": 10.0,
    "configure": 60.0,
    "status": 2.0,
    "login": 1.0,
    "rails-runner": 20.0,
    "reconfigure": 60.0,
    # PuppetDB reports `starting` after its server boots, before it serves (the status API's
    # states, PDF-2021.7.1 p.436-441; peadm PR #681 waits out this window after provisioning)
    "puppetdb.start": 30.0,
}


class Clock:
    dir: Path
    scale: float
    faults: FaultTable
    journal_path: Path
    tasks: set[asyncio.Task[Any]]

    @property
    def lab(self) -> Lab:
        """This lab whole, for the functions of other modules that take one (every concern is a
        part of a Lab: labsim/lab.py)."""
        return cast("Lab", self)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def sleep(self, model_seconds: float, op: str = "") -> None:
        started = time.time()
        await asyncio.sleep(model_seconds * self.scale)
        extra = self.faults.slow(op) if op else 0.0
        if extra:
            extra = await self._slowed(op, extra)
        self.record_sleep(started, time.time(), model_seconds + extra, op)

    async def _slowed(self, op: str, model_seconds: float) -> float:
        """A `slow:` fault's extra wait, cut short when the fault is cleared (a test ends a step
        it slowed so, rather than waiting it out); the modelled seconds it waited."""
        began = time.monotonic()
        end = began + model_seconds * self.scale
        while (left := end - time.monotonic()) > 0 and self.faults.slow(op):
            await asyncio.sleep(min(left, 0.1))
        return min(model_seconds, (time.monotonic() - began) / self.scale)

    def record_sleep(self, started: float, ended: float, model_seconds: float, op: str) -> None:
        """Every modelled wait, for benchmarks: real start and end (epoch), modelled seconds."""
        entry = {"t0": started, "t1": ended, "model": model_seconds, "op": op}
        with (self.dir / "sleeps.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def dur(self, key: str) -> float:
        return DURATIONS[key]

    def journal(self, vm: str, op: str, outcome: str, detail: str = "") -> None:
        entry = {
            "time": dt.datetime.now(dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "vm": vm,
            "op": op,
            "outcome": outcome,
            "detail": detail,
        }
        with self.journal_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
