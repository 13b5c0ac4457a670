"""labsim command line: up, down, status, fault, journal, operations, secrets, drill."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from labsim import control
from labsim.faults import OPERATIONS, FaultSpecError, parse_fault
from labsim.launch import (
    UsageError,
    daemon_pid,
    default_state,
    start_lab,
    stop_lab,
)


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


def cmd_down(args: argparse.Namespace) -> int:
    state: Path = args.state
    if stop_lab(state):
        print(f"labsim: lab in {state} stopped")
    else:
        print(f"labsim: no lab running in {state}")
    return 0


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
    sys.exit(main())
