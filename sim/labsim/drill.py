"""`labsim drill [--fault F]... [--agents N] [-- PE-DR-DRILL-OPTIONS]`: the product's whole drill
against a private lab of its own, stopped and removed afterwards whatever happens.

The lab is what `labsim up --state <tmp>` starts; `pe-dr drill --spec <its lab.toml> --yes` runs
as a child process with the lab's exported environment, in a process group of its own, so that a
terminal's Ctrl-C reaches it once: labsim forwards SIGINT and SIGTERM. The exit code is pe-dr's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from labsim.launch import UsageError, check_up_options, start_lab, stop_lab

POLL_SECONDS = 0.2  # a simulated lab answers at once: look often
TIME_SCALE = 0.001  # `labsim up`'s default
# After a forwarded signal pe-dr stops within its own grace (PE_DR_STOP_GRACE_SECONDS); this is
# the margin on top of it before the drill is killed.
KILL_MARGIN_SECONDS = 30.0


def _say(text: str) -> None:
    print(f"   labsim  {text}", flush=True)


def _stop_grace() -> float:
    from pe_dr.settings import settings

    try:
        return settings().stop_grace_seconds
    except Exception:  # pe-dr itself reports a bad setting
        return 25.0


def _check_options(options: list[str]) -> None:
    if any(o == "--spec" or o.startswith("--spec=") for o in options):
        raise UsageError("labsim drill drills its own lab: leave --spec out of the pe-dr options")


def _pe_dr_drill(spec: Path, options: list[str]) -> list[str]:
    # The product's entry point in this interpreter (labsim is installed beside it). Options
    # after labsim's own win, so a --poll-interval given here replaces the short default.
    return [
        sys.executable,
        "-m",
        "pe_dr_cli.main",
        "drill",
        "--spec",
        str(spec),
        "--yes",
        "--poll-interval",
        str(POLL_SECONDS),
        *options,
    ]


def child_environment(exports: list[tuple[str, str]]) -> dict[str, str]:
    # The lab goes with this command: pe-dr's closing advice names it, not `pe-dr retry`.
    env = {**os.environ, "PE_DR_RERUN_COMMAND": "labsim drill"}
    for key, value in exports:
        env[key] = value.replace("$PATH", os.environ.get("PATH", "")) if key == "PATH" else value
    return env


class _Signals:
    """SIGINT and SIGTERM while the command runs: recorded, and passed on to the drill once it
    runs. Never raised here, so starting and removing the lab are not cut short (both are
    bounded)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.child: subprocess.Popen[bytes] | None = None
        self.kill_at: float | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.forward(signum)

    def forward(self, signum: int) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)  # the whole group, as a terminal's Ctrl-C would
        if self.kill_at is None:
            self.kill_at = time.monotonic() + _stop_grace() + KILL_MARGIN_SECONDS


def _wait(signals: _Signals, child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if signals.kill_at is not None and time.monotonic() > signals.kill_at:
                print("labsim: the drill did not stop in time: killed it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                code = child.wait(timeout=30)
                break
    return 128 - code if code < 0 else code


def _signal_exit(signals: _Signals) -> int:
    return 128 + signals.received[0]


def cmd_drill(args: argparse.Namespace) -> int:
    options: list[str] = list(args.pe_dr_options)
    _check_options(options)
    check_up_options(args.fault, TIME_SCALE, args.agents)
    with _Signals() as signals:
        state = Path(tempfile.mkdtemp(prefix="labsim-drill-"))
        try:
            _say(f"starting a simulated lab in {state}")
            exports = start_lab(state, faults=args.fault, time_scale=TIME_SCALE, agents=args.agents)
            if exports is None:
                return 1
            if signals.received:
                return _signal_exit(signals)
            command = _pe_dr_drill(state / "lab.toml", options)
            child = subprocess.Popen(
                command, env=child_environment(exports), process_group=0, stdin=subprocess.DEVNULL
            )
            signals.child = child
            if signals.received:  # arrived while the drill was starting
                signals.forward(signals.received[-1])
            code = _wait(signals, child)
        finally:
            stop_lab(state)
            shutil.rmtree(state, ignore_errors=True)
            _say(f"stopped the lab and removed {state}")
    return code
