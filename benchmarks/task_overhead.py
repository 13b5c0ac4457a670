"""`python -m benchmarks.task_overhead`: what orchestration adds to one drill step, side by side.

One flow run against one Prefect server (Prefect's temporary one, SQLite), the same trivial core
action (`Lab` opened and closed around it, nothing else) run N times each way, in turns so that
a noisy machine weighs on every way alike:

* `call`: the action called in the flow body, as without Prefect;
* `prefect task`: a bare `@task` of it (Prefect's defaults);
* `pe-dr step`: the drill's own task of it (`action_task`: the lab spec for the lab, the
  resumable cache key, the result persisted, retries on transient errors, a timeout, the
  progress hooks), as every drill step runs (Prefect logging at INFO to the API and muted on
  the console, as under `pe-dr drill`);
* `pe-dr step, no cache`: the same without the cache and the persisted result, to tell their
  part.

Printed: per way, the mean and median wall milliseconds per step and the process's CPU
milliseconds per step; then what each task way adds to a call.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # to the API, as a drill logs
for _handler in ("CONSOLE", "CONSOLE_FLOW_RUNS"):  # and not to the console, as pe-dr drill mutes it
    os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{_handler}_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PE_DR_RETRY_DELAY_SCALE", "0.01")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per way (default 40)")
    args = parser.parse_args(argv)

    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness

    from pe_dr.lab.live import Lab
    from pe_dr.lab.spec import load_spec
    from tasks.common import action_task

    def look(lab: Lab, n: int) -> int:
        return n + len(lab.spec.primary.name)

    spec = load_spec(None)
    ways: dict[str, Callable[[int], Any]] = {}

    def call(n: int) -> int:
        with Lab(spec) as live:
            return look(live, n)

    ways["call"] = call
    ways["prefect task"] = task(call, name="bare")
    step = action_task(look, timeout=600)
    ways["pe-dr step"] = lambda n: step(spec, n)
    uncached = action_task(look, timeout=600, cache=False, name="look-uncached")
    ways["pe-dr step, no cache"] = lambda n: uncached(spec, n)

    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, float] = dict.fromkeys(ways, 0.0)

    @flow(name="task-overhead-bench")
    def bench() -> None:
        for way in ways.values():  # once each first: imports, first API calls
            way(-1)
        for n in range(args.steps):
            for name, way in ways.items():
                c0, t0 = _cpu(), time.perf_counter()
                way(n)
                wall[name].append(time.perf_counter() - t0)
                cpu[name] += _cpu() - c0

    with prefect_test_harness(server_startup_timeout=120):
        bench()

    base = statistics.mean(wall["call"])
    print(f"{args.steps} steps per way, in turns, one flow run, Prefect's temporary server")
    print(f"{'way':<22} {'mean ms':>8} {'median ms':>10} {'CPU ms':>7} {'adds ms':>8}")
    for name in ways:
        mean = statistics.mean(wall[name])
        print(
            f"{name:<22} {mean * 1000:8.1f} {statistics.median(wall[name]) * 1000:10.1f} "
            f"{cpu[name] / args.steps * 1000:7.1f} {(mean - base) * 1000:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
