"""A lab's life: start one in a state directory, find its daemon, stop it and its session
(shared by the `labsim` commands and `labsim drill`, which must not import each other)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from labsim import control, procfs
from labsim.faults import FaultSpecError, check_vms, parse_fault
from pe_dr import processes


class UsageError(Exception):
    pass


def default_state() -> Path:
    env = os.environ.get("LABSIM_STATE")
    if env:
        return Path(env)
    return Path.home() / ".local" / "state" / "labsim" / "default"


def daemon_pid(state: Path) -> int | None:
    try:
        pid = int((state / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if processes.alive(pid) else None


def _hosts(agents: int) -> tuple[str, list[dict[str, str]]]:
    a = random.randint(16, 250)
    b = random.randint(0, 255)
    prefix = f"127.{a}.{b}"
    hosts = [
        {"name": "primary.vm", "role": "primary", "address": f"{prefix}.4"},
        {"name": "replica.vm", "role": "replica", "address": f"{prefix}.41"},
        {"name": "linux.vm", "role": "agent", "address": f"{prefix}.6"},
        {"name": "gitlab.vm", "role": "gitlab", "address": f"{prefix}.7"},
    ]
    for i in range(2, agents + 1):
        hosts.append({"name": f"agent{i:02d}.vm", "role": "agent", "address": f"{prefix}.{99 + i}"})
    return prefix, hosts


def check_up_options(faults: list[str], time_scale: float, agents: int) -> None:
    """What `up` refuses (UsageError, exit 2), checked before anything starts."""
    if time_scale < 0:
        raise UsageError("--time-scale must be >= 0")
    if agents < 1 or agents > 150:
        raise UsageError("--agents must be between 1 and 150")
    _, hosts = _hosts(agents)
    for spec in faults:
        try:
            check_vms(parse_fault(spec), [h["name"] for h in hosts])
        except FaultSpecError as exc:
            raise UsageError(str(exc)) from None


def start_lab(
    state: Path, *, faults: list[str], time_scale: float, agents: int
) -> list[tuple[str, str]] | None:
    """Start the lab daemon in `state`; the variables a drill of it needs (PATH's value names
    `$PATH`), or None when it did not start (said on stderr)."""
    check_up_options(faults, time_scale, agents)
    _, hosts = _hosts(agents)
    pid = daemon_pid(state)
    if pid is not None:
        print(
            f"labsim: a lab is already running in {state} (daemon pid {pid}); "
            "run 'labsim down' first",
            file=sys.stderr,
        )
        return None
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("control.sock", "daemon.ready", "journal.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (state / stale).unlink()
    import shutil

    for d in ("vms", "snapshots"):
        shutil.rmtree(state / d, ignore_errors=True)
    exports: list[tuple[str, str]] = []
    console = os.environ.get("PE_CONSOLE_PASSWORD")
    if not console:
        console = "Pe+" + secrets.token_urlsafe(12)
        exports.append(("PE_CONSOLE_PASSWORD", console))
    gitlab = os.environ.get("GITLAB_ROOT_PASSWORD")
    if not gitlab:
        gitlab = "Gl+" + secrets.token_urlsafe(12)
        exports.append(("GITLAB_ROOT_PASSWORD", gitlab))
    cfg: dict[str, Any] = {
        "name": "labsim-" + secrets.token_hex(3),
        "time_scale": time_scale,
        "faults": list(faults),
        "hosts": hosts,
        "console_password": console,
        "gitlab_password": gitlab,
    }
    cfg_path = state / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    cfg_path.chmod(0o600)
    from labsim.vagrant_stub import write_stub

    write_stub(state)
    log = (state / "daemon.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labsim.daemon", str(state)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=str(state),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    (state / "daemon.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state / "daemon.log").read_text(errors="replace")[-2000:]
            print(f"labsim: the lab daemon exited during start-up:\n{tail}", file=sys.stderr)
            return None
        if (state / "daemon.ready").exists():
            try:
                control.call(state, {"cmd": "ping"}, timeout=2)
                break
            except (control.ControlError, OSError):
                pass
        time.sleep(0.02)
    else:
        _kill_group(proc.pid)
        print("labsim: the lab daemon did not become ready in 15 s", file=sys.stderr)
        return None
    return [
        ("PATH", f"{state / 'bin'}:$PATH"),
        ("PE_DR_LAB_SPEC", str(state / "lab.toml")),
        ("LABSIM_STATE", str(state)),
        *exports,
        ("PE_DR_RETRY_DELAY_SCALE", "0.01"),
    ]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _session_pids(sid: int) -> list[int]:
    return [pid for pid, fields in procfs.live() if int(fields[3]) == sid]


def stop_lab(state: Path) -> bool:
    """Stop the lab in `state` and everything in its daemon's session; False if none ran."""
    pid = daemon_pid(state)
    if pid is None:
        return False
    with contextlib.suppress(control.ControlError, OSError):
        control.call(state, {"cmd": "shutdown"}, timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and processes.alive(pid):
        time.sleep(0.05)
    # the daemon ran in its own session: kill anything left in it
    for _ in range(50):
        left = [p for p in _session_pids(pid) if p != os.getpid()]
        if not left and not processes.alive(pid):
            break
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        for p in left:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (state / "daemon.pid").unlink()
    with contextlib.suppress(FileNotFoundError):
        (state / "control.sock").unlink()
    return True
