"""Processes of the real-Puppet lab: each runs in a private mount and UTS namespace
(`namespaced`), is stopped by its PID (SIGTERM, then SIGKILL after a bounded wait), and has its
memory sampled (VmRSS, VmHWM)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

STOP_TIMEOUT = 30.0  # seconds after SIGTERM before SIGKILL (measured: 2 s)


# --- processes -------------------------------------------------------------------------------


def namespaced(hostname: str, binds: list[tuple[Path, str]], argv: list[str]) -> list[str]:
    """argv run in a new mount and UTS namespace with `binds` (source, target) and `hostname`.
    unshare and sh exec the command, so the PID Popen gives is the command's."""
    script = ["set -e"]
    script += [f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in binds]
    script += [f"hostname {shlex.quote(hostname)}", 'exec "$@"']
    return [
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "sh",
        "-c",
        "\n".join(script),
        "sh",
        *argv,
    ]


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def kib(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


def mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def alive(pid: int) -> bool:
    state = proc_status(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def wait_until(
    what: str, check: Callable[[], object], timeout: float, every: float = 0.5
) -> object:
    """Poll `check` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))


class Process:
    """A process the lab started, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as fh:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
            )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.paused = False
        self.peak_rss_kib = 0
        self.mnt_ns: str | None = None

    def running(self) -> bool:
        return self.popen.poll() is None

    def sample(self) -> int:
        """Its RSS now (KiB); remembers its peak (VmHWM)."""
        status = proc_status(self.pid) if self.running() else {}
        self.peak_rss_kib = max(self.peak_rss_kib, kib(status.get("VmHWM")))
        return kib(status.get("VmRSS"))

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = STOP_TIMEOUT) -> float:
        """SIGTERM, SIGKILL after `timeout` s; returns the monotonic time it was gone."""
        if self.running():
            self.sample()
            if self.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGCONT)
                self.paused = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        return time.monotonic()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def pss_kib(pid: int) -> int:
    """Its proportional set size (KiB): shared pages counted once across the processes sharing
    them, as PostgreSQL's backends share its buffers."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0
