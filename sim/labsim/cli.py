"""labsim command line: up, down, status, fault, journal, operations, secrets, drill."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from labsim import control, procfs
from labsim.faults import OPERATIONS, FaultSpecError, check_vms, parse_fault
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


def cmd_up(args: argparse.Namespace) -> int:
    state: Path = args.state
    lines = start_lab(state, faults=args.fault, time_scale=args.time_scale, agents=args.agents)
    if lines is None:
        return 1
    for key, value in lines:
        if key == "PATH":
            print(f'export PATH={shlex.quote(str(state / "bin"))}:"$PATH"')
        else:
            print(f"export {key}={shlex.quote(value)}")
    return 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _session_pids(sid: int) -> list[int]:
    return [pid for pid, fields in procfs.live() if int(fields[3]) == sid]


def cmd_down(args: argparse.Namespace) -> int:
    state: Path = args.state
    if stop_lab(state):
        print(f"labsim: lab in {state} stopped")
    else:
        print(f"labsim: no lab running in {state}")
    return 0


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


def _need_daemon(state: Path) -> None:
    if daemon_pid(state) is None:
        raise control.ControlError(f"no lab is running in {state}; run 'labsim up' first")


def cmd_status(args: argparse.Namespace) -> int:
    _need_daemon(args.state)
    res = control.call(args.state, {"cmd": "status"})
    if args.json:
        print(json.dumps(res["vms"], indent=2))
        return 0
    for vm in res["vms"]:
        print(f"{vm['name']:<14} {vm['state']:<12} {vm['address']}")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    if args.action == "add":
        if not args.spec:
            raise UsageError("fault add needs a SPEC")
        for spec in args.spec:
            try:
                parse_fault(spec)
            except FaultSpecError as exc:
                raise UsageError(str(exc)) from None
        _need_daemon(args.state)
        for spec in args.spec:
            res = control.call(args.state, {"cmd": "fault_add", "spec": spec})
            if "error" in res:
                raise UsageError(res["error"])
        return 0
    _need_daemon(args.state)
    if args.action == "clear":
        control.call(args.state, {"cmd": "fault_clear"})
        return 0
    res = control.call(args.state, {"cmd": "fault_list"})
    for f in res["faults"]:
        extra = f" (remaining {f['remaining']})" if f["remaining"] is not None else ""
        print(f"{f['spec']}{extra}")
    return 0


def read_journal(state: Path) -> list[dict[str, Any]]:
    path = state / "journal.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def cmd_journal(args: argparse.Namespace) -> int:
    entries = read_journal(args.state)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        print(f"{e['time']} {e['vm'] or '-':<12} {e['op']:<32} {e['outcome']:<8} {e['detail']}")
    return 0


def cmd_operations(args: argparse.Namespace) -> int:
    for name, desc in OPERATIONS.items():
        print(f"{name}\t{desc}")
    return 0


def cmd_secrets(args: argparse.Namespace) -> int:
    _need_daemon(args.state)
    res = control.call(args.state, {"cmd": "secrets"})
    if args.json:
        print(json.dumps(res["secrets"]))
    else:
        for s in res["secrets"]:
            print(f"{s['kind']}\t{s['value']}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one clear line, exit 2
        print(f"labsim: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="labsim", description="Simulated Puppet Enterprise DR lab")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_state(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state", type=Path, default=None, help="state directory")

    up = sub.add_parser("up", help="start the lab daemon")
    with_state(up)
    up.add_argument("--fault", action="append", default=[], metavar="SPEC")
    up.add_argument("--time-scale", type=float, default=0.001)
    up.add_argument("--agents", type=int, default=1)
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the lab")
    with_state(down)
    down.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="VM states and addresses")
    with_state(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    fa = sub.add_parser("fault", help="add, clear or list faults")
    with_state(fa)
    fa.add_argument("action", choices=["add", "clear", "list"])
    fa.add_argument("spec", nargs="*")
    fa.set_defaults(func=cmd_fault)
    jo = sub.add_parser("journal", help="every operation the lab saw")
    with_state(jo)
    jo.add_argument("--json", action="store_true")
    jo.set_defaults(func=cmd_journal)
    op = sub.add_parser("operations", help="operation names for fail: and slow:")
    op.set_defaults(func=cmd_operations)
    se = sub.add_parser("secrets", help="every secret the lab holds or issued")
    with_state(se)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_secrets)
    dr = sub.add_parser(
        "drill",
        help="the product's drill against a private lab, removed afterwards "
        "(pe-dr drill options after --)",
    )
    dr.add_argument("--fault", action="append", default=[], metavar="SPEC")
    dr.add_argument("--agents", type=int, default=1)
    dr.set_defaults(func=_cmd_drill)
    sn = sub.add_parser(
        "serve-negative",
        help="serve the dr-drill/negative deployment (needs PREFECT_API_URL and the lab's "
        "PE_DR_LAB_SPEC: labsim up's exports)",
    )
    sn.set_defaults(func=_cmd_serve_negative)
    return p


def _cmd_serve_negative(args: argparse.Namespace) -> int:
    """Serve dr-drill/negative until SIGINT or SIGTERM, schedule kept on (as `pe-dr serve`)."""
    if not os.environ.get("PREFECT_API_URL"):
        raise UsageError(
            "serve-negative needs a Prefect server: start one (`prefect server start`) and set "
            "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    from prefect import serve

    from labsim.negative import deployment
    from pe_dr.errors import ConfigError

    try:
        negative = deployment()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    serve(negative, pause_on_shutdown=False)
    return 0


def _cmd_drill(args: argparse.Namespace) -> int:
    from labsim.drill import cmd_drill

    return cmd_drill(args)


def _take_state(words: list[str]) -> tuple[list[str], Path | None]:
    """--state DIR (or --state=DIR) wherever it stands: before the command, between the words of
    `fault add SPEC...`, at the end. The last one wins."""
    rest: list[str] = []
    state: Path | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--state" and i + 1 < len(words):
            state, i = Path(words[i + 1]), i + 2
            continue
        if word.startswith("--state="):
            state = Path(word.split("=", 1)[1])
        else:
            rest.append(word)
        i += 1
    return rest, state


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # `drill ... -- OPTIONS`: what follows `--` is pe-dr's, not labsim's
    passed: list[str] = []
    if "--" in words:
        at = words.index("--")
        words, passed = words[:at], words[at + 1 :]
    words, state = _take_state(words)
    args = parser.parse_args(words)
    if passed and args.command != "drill":
        parser.error(f"options after -- are for `labsim drill` only: {' '.join(passed)}")
    args.pe_dr_options = passed
    if state is not None:
        args.state = state
    if getattr(args, "state", None) is None:
        args.state = default_state()
    args.state = Path(args.state).expanduser().absolute()
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"labsim: {exc}", file=sys.stderr)
        return 2
    except control.ControlError as exc:
        print(f"labsim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # `python -m labsim.cli`: run the module labsim.drill imports, whose UsageError it raises
    from labsim import cli

    sys.exit(cli.main())
