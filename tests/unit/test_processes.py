"""Whether a process still runs: a lab lock's holder or labsim's daemon that exited, even while
its parent has not yet read its status (a zombie), is gone; so is a pid given to a later one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pe_dr import processes


def test_a_running_process_is_alive_and_keeps_its_start() -> None:
    since = processes.started(os.getpid())
    assert since is not None and since.isdigit()
    assert processes.alive(os.getpid())
    assert processes.alive(os.getpid(), since)


def test_a_process_given_a_reused_pid_is_not_the_one_that_started_then() -> None:
    since = processes.started(os.getpid())
    assert since is not None
    assert not processes.alive(os.getpid(), str(int(since) - 1))


def test_a_process_that_exited_is_gone_before_and_after_its_parent_reads_its_status() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while processes.started(child.pid) is not None and time.monotonic() < deadline:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the child never became a zombie")
    assert not processes.alive(child.pid)  # exited, not yet reaped
    child.wait(timeout=10)
    assert not processes.alive(child.pid)
