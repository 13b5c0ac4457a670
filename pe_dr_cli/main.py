"""`pe-dr`: run the DR drill from a terminal (one line per step, a closing summary, exit codes).

Exit codes: 0 the drill passed, 1 a check or step failed, 2 bad usage or configuration (nothing
was done to the lab), 130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from flows.params import POLL_MAX_SECONDS, POLL_MIN_SECONDS, Budgets
from pe_dr import interrupts
from pe_dr import preflight as checks_first
from pe_dr.errors import ConfigError
from pe_dr.figures import BUDGET_MAX_SECONDS, FIGURE_NAMES
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr.secrets import scrub
from pe_dr.settings import settings
from pe_dr_cli import deployment_commands, kill_switch_cmd, report_cmd

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """A bad option is one line naming it and the rule, exit 2 (argparse's usage block would
    bury the line that matters); `--help` shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pe-dr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    drill = sub.add_parser("drill", help="run the DR drill (building the lab when needed)")
    deployment_commands.add_spec_option(drill)
    drill.add_argument("--promote", action="store_true", help="also promote the replica")
    drill.add_argument(
        "--yes",
        action="store_true",
        help="allow the drill to halt the primary (and destroy it with --promote)",
    )
    drill.add_argument("--report-dir", default="reports", metavar="DIR")
    drill.add_argument(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between looks at the lab, 0.1 to 60 (default 2)",
    )
    drill.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="a budget for this run (repeatable): " + ", ".join(Budgets.model_fields),
    )
    again = sub.add_parser(
        "reprotect",
        help="after a promotion: rebuild the lost primary's VM as the new primary's replica",
    )
    deployment_commands.add_spec_option(again)
    again.add_argument(
        "--yes",
        action="store_true",
        help="allow it to build the VM again (and destroy it first, if it still holds the old "
        "primary's installation)",
    )
    again.add_argument("--poll-interval", type=float, default=None, metavar="SECONDS")
    again.add_argument("--budget", action="append", default=[], metavar="NAME=SECONDS")
    retry = sub.add_parser(
        "retry", help="retry a failed drill run: completed steps are skipped, the rest run again"
    )
    retry.add_argument("flow_run", metavar="ID", help="the flow run id `pe-dr drill` printed")
    retry.add_argument(
        "--force",
        action="store_true",
        help="retry a run still marked Running (its process was killed)",
    )
    past = sub.add_parser(
        "history",
        help="one row per drill, read from the Prefect server (or the local database), and a "
        "chart of RTO, replication lag and failback over time",
    )
    past.add_argument("--lab", metavar="NAME", help="the drills of this lab only")
    past.add_argument("--chart", metavar="PATH", help="write the chart there (SVG)")
    past.add_argument("--limit", type=int, default=None, metavar="N", help="the last N drills only")
    report_cmd.add_parser(sub)
    kill_switch_cmd.add_parser(sub)
    deployment_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_PASSED
    try:
        settings()  # every PE_DR_ variable checked before anything starts
        if args.command == "drill":
            return drill(args)
        if args.command == "reprotect":
            return reprotect(args)
        if args.command in deployment_commands.COMMANDS:
            return deployment_commands.dispatch(args)
        if args.command == "retry":
            return retry(args)
        if args.command == "history":
            return show_history(args)
        if args.command == "report":
            return report_cmd.run(args)
        if args.command == "kill-switch":
            return kill_switch_cmd.run(args)
    except (
        UsageError,
        ConfigError,
        report_cmd.ReportUsageError,
        kill_switch_cmd.KillSwitchUsageError,
    ) as exc:
        for problem in getattr(exc, "problems", None) or [str(exc)]:
            print(f"pe-dr: {scrub(problem)}", file=sys.stderr)
        if args.debug:
            raise
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"pe-dr: {scrub(str(exc)) or type(exc).__name__} (--debug shows more)", file=sys.stderr
        )
        return EXIT_FAILED
    except BaseException as exc:  # Ctrl-C or SIGTERM outside a drill (before or after it)
        signum = interrupts.signal_of(exc)
        if signum is None:
            raise
        stop = interrupts.seen(signum)
        print(f"pe-dr: stopped by {stop.name}", file=sys.stderr)
        return stop.exit_code
    return EXIT_USAGE


# --- drill ---------------------------------------------------------------------------------


def drill(args: argparse.Namespace) -> int:
    if args.promote and not args.yes:
        raise UsageError("--promote destroys the primary: add --yes to allow it")
    budgets = parse_budgets(args.budget)
    poll = parse_poll_interval(args.poll_interval)
    spec = load_spec(args.spec)
    if not args.yes:
        raise UsageError(
            f"the drill halts {spec.primary.name} to prove failover: add --yes to allow it"
        )
    return _run_drill(args, spec, budgets, poll)


def pe_servers(spec: LabSpec) -> list[str]:
    """`--yes` consents for both PE servers: a promotion swaps which one is the primary, and the
    drill halts (and with --promote destroys) whichever PE runs as its primary now."""
    return [spec.primary.name, spec.replica.name]


def reprotect(args: argparse.Namespace) -> int:
    budgets = parse_budgets(args.budget)
    poll = parse_poll_interval(args.poll_interval)
    spec = load_spec(args.spec)
    if not args.yes:
        raise UsageError(
            "reprotect rebuilds the lost primary's VM as the new primary's replica (and destroys "
            "it first if it still holds the old installation): add --yes to allow it"
        )
    report_dir = str(Path("reports").resolve())  # where a chapter flow writes its journal
    confirm = pe_servers(spec)
    _local_preflight("reprotect", spec, confirm, report_dir)
    _prefect_ready(args.debug)
    from flows.params import ReprotectParameters
    from flows.reprotect import reprotect as reprotect_flow

    _show_progress()
    parameters = ReprotectParameters(
        lab=spec, confirm=confirm, budgets=budgets, poll_interval_seconds=poll
    )
    print(f"reprotect  lab {spec.name}", flush=True)
    return _run_flow(
        args,
        report_dir,
        lambda started: reprotect_flow.with_options(on_running=[started])(
            parameters, return_state=True
        ),
    )


def parse_budgets(items: Sequence[str]) -> Any:
    """`--budget NAME=SECONDS`, each checked against the Budgets model (one sentence if not)."""
    from pydantic import ValidationError

    values: dict[str, float] = {}
    names = sorted(Budgets.model_fields)
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in Budgets.model_fields:
            raise UsageError(
                f"--budget {item!r}: expected NAME=SECONDS with NAME one of {', '.join(names)}"
            )
        try:
            values[name] = float(raw)
        except ValueError:
            raise UsageError(f"--budget {item!r}: {raw!r} is not a number of seconds") from None
    try:
        return Budgets(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"--budget {first['loc'][0]}={first['input']}: must be a finite number of seconds, "
            f"more than 0 and at most {BUDGET_MAX_SECONDS / 86400:g} days"
        ) from None


def parse_poll_interval(value: float | None) -> float:
    from pydantic import TypeAdapter, ValidationError

    from flows.params import PollField

    if value is None:
        return 2.0
    try:
        return float(TypeAdapter(PollField).validate_python(value))
    except ValidationError:
        raise UsageError(
            f"--poll-interval {value:g}: must be at least {POLL_MIN_SECONDS:g} and at most "
            f"{POLL_MAX_SECONDS:g} seconds"
        ) from None


def _local_preflight(
    flow: str, spec: LabSpec, confirm: list[str], report_dir: str, *, promote: bool = False
) -> None:
    """Pre-flight's local half, before Prefect starts: a bad setting costs a second, not an hour.
    The flow's own first step repeats it and adds the lab's credentials and lock."""
    needs = checks_first.needs_for(
        flow, spec, confirm=confirm, promote=promote, report_dir=report_dir
    )
    first = checks_first.local(spec, needs, secret_blocks=False)
    if first.problems:
        raise checks_first.PreflightFailed(first.problems)


def _prefect_ready(debug: bool) -> None:
    """Before the first thing that needs Prefect (the command's own checks are done): its API
    answers, and its console is quiet."""
    deployment_commands.require_prefect_api()
    _quiet_prefect_console(debug)


def _quiet_prefect_console(debug: bool) -> None:
    """Prefect's console log would drown the one-line-per-step output; the API keeps it all."""
    level = "INFO" if debug else "CRITICAL"
    for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A first start migrates a new database: slow on a busy 2-core machine (default 20 s).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _show_progress() -> None:
    progress = logging.getLogger("pe_dr.progress")
    if not progress.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


def _run_drill(args: argparse.Namespace, spec: LabSpec, budgets: Any, poll: float) -> int:
    report_dir = str(Path(args.report_dir).resolve())
    confirm = pe_servers(spec)
    _local_preflight("dr-drill", spec, confirm, report_dir, promote=bool(args.promote))
    # Imported here: the retry pacing and the lab's environment must be in place first.
    _prefect_ready(args.debug)
    from flows.dr_drill import dr_drill
    from flows.params import DrillParameters

    _show_progress()
    parameters = DrillParameters(
        lab=spec,
        confirm=confirm,
        promote=bool(args.promote),
        budgets=budgets,
        report_dir=report_dir,
        poll_interval_seconds=poll,
    )
    print(f"    drill  lab {spec.name}: {', '.join(h.name for h in spec.hosts)}", flush=True)
    return _run_flow(
        args,
        report_dir,
        lambda started: dr_drill.with_options(on_running=[started])(parameters, return_state=True),
    )


def _run_flow(args: argparse.Namespace, report_dir: str | None, run: Any) -> int:
    """Run a flow in this process, stoppable by Ctrl-C and SIGTERM (pe_dr_cli.stopping).

    `run(on_running)` starts the flow with `on_running` among its state hooks: the command line
    learns the root run's id from Prefect, to settle the run after a stop."""
    from pe_dr_cli import stopping

    roots: list[str] = []

    def started(flow: Any, flow_run: Any, state: Any) -> None:
        stopping.take_back_sigterm()  # (the engine has just put its own handler in place)
        if flow_run.parent_task_run_id is None and str(flow_run.id) not in roots:
            roots.append(str(flow_run.id))

    def last_resort(stop: interrupts.Stop) -> None:
        for root in roots:
            _write_stopped_journal(root, stop, report_dir)
            stopping.mark_unfinished(_run_ids(root), stop)

    started_at = time.monotonic()
    with stopping.handling(last_resort):
        try:
            stopping.start_local_server()
            state = run(started)
        except BaseException as exc:
            signum = interrupts.signal_of(exc)
            if signum is None:
                raise
            stop = interrupts.seen(signum)
            record = getattr(exc, "record", None)
            return _stopped(stop, time.monotonic() - started_at, roots, record)
        return _summarize(args, state, time.monotonic() - started_at)


def _run_ids(root: str) -> list[str]:
    from flows import journal

    try:
        return journal.run_ids(root)
    except Exception:
        return [root]


def _write_stopped_journal(root: str, stop: interrupts.Stop, report_dir: str | None) -> None:
    """The last resort when a stop did not finish in time: the record as Prefect has it."""
    from flows import journal

    with contextlib.suppress(Exception):
        record = journal.read(root, interrupted=stop.name)
        if report_dir:
            record.write(report_dir)


def _stopped(stop: interrupts.Stop, elapsed: float, roots: list[str], record: Any) -> int:
    """The closing lines of a drill stopped by a signal; no run of it is left Running."""
    from pe_dr_cli import stopping

    for root in roots:
        with contextlib.suppress(Exception):
            stopping.mark_unfinished(_run_ids(root), stop)
    print("", flush=True)
    print(f"  verdict  STOPPED by {stop.name} after {elapsed:.1f} s", flush=True)
    if roots:
        if record is not None:
            _figures(record)
        print(f" flow run  {roots[0]}", flush=True)
        again = settings().rerun_command
        if again:
            print(f"     next  {_rerun_advice(again)}", flush=True)
        else:
            print(f"   resume  pe-dr retry {roots[0]}", flush=True)
    return stop.exit_code


def _rerun_advice(command: str) -> str:
    """The one piece of advice for a run whose lab does not outlive its command."""
    return (
        f"this lab is removed with the command, so the run cannot be retried: run {command} again"
    )


def _figures(report: Any) -> None:
    for row in report.figures():
        label = FIGURE_NAMES.get(str(row["figure"]), str(row["figure"]))
        value, budget, margin = row["seconds"], row["budget"], row["margin"]
        line = "—" if value is None else f"{value:.2f} s"
        if value is not None and budget is not None:
            over = " OVER BUDGET" if margin < 0 else ""
            line += f"  (budget {budget:g} s, margin {margin:.1f} s{over})"
        width = max(len(name) for name in FIGURE_NAMES.values())
        print(f"  {label:>{width}}  {line}", flush=True)


SHOWN_FIELDS = 12  # of a failed check's evidence, on the command line (all are in the journal)


def _summarize(args: argparse.Namespace, state: Any, elapsed: float) -> int:
    """The closing lines: verdict, the three figures, the flow run; the exit code."""
    from flows import journal

    report = journal.record_of(state)
    passed = state.is_completed() and report is not None and report.status == "passed"
    error: BaseException | None = None
    if not passed and state.is_failed():
        try:
            state.result()
        except Exception as exc:
            error = exc
    print("", flush=True)
    print(f"  verdict  {'PASSED' if passed else 'FAILED'} in {elapsed:.1f} s", flush=True)
    if report is not None:
        _figures(report)
        failure = report.failure()
        if not passed:
            reason = (failure or {}).get("detail") or report.error or "the drill did not pass"
            print(f"   reason  {scrub(str(reason))}", flush=True)
        if failure is not None:
            if failure["step"]:
                where = f"{failure['step']} ({failure['chapter']}, {failure['attempts']} attempts)"
                print(f"     step  {where}", flush=True)
            seen = failure["evidence"]
            evidence = list(seen.items()) if isinstance(seen, dict) else []
            for key, value in evidence[:SHOWN_FIELDS]:
                print(f"      saw  {key}: {scrub(str(value))}", flush=True)
            if len(evidence) > SHOWN_FIELDS:
                print(
                    f"      saw  … {len(evidence) - SHOWN_FIELDS} more in the journal", flush=True
                )
        print(f" flow run  {report.flow_run_id}", flush=True)
        next_step = report.next_step()
        again = settings().rerun_command
        if next_step and again and report.status in ("failed", "interrupted"):
            next_step = f"clear the cause above; {_rerun_advice(again)}"
        if next_step and not passed:
            print(f"     next  {next_step}", flush=True)
    if isinstance(error, checks_first.PreflightFailed):
        for problem in error.problems:
            print(f"pe-dr: {scrub(problem)}", file=sys.stderr)
        return EXIT_USAGE  # nothing was done to the lab
    if isinstance(error, ConfigError):
        return EXIT_USAGE  # the lab or its secrets are misconfigured, not broken
    if error is not None and args.debug:
        raise error
    return EXIT_PASSED if passed else EXIT_FAILED


# --- history -------------------------------------------------------------------------------


def show_history(args: argparse.Namespace) -> int:
    """The drills on record, oldest first, how the latest compares, and the chart when asked."""
    from pe_dr import history

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be 1 or more")
    if args.lab is not None:
        from pydantic import ValidationError

        try:
            LabSpec(name=args.lab)
        except ValidationError:
            raise UsageError(f"--lab {args.lab!r} is not a lab name") from None
    chart = Path(args.chart) if args.chart else None
    if chart is not None and not chart.parent.is_dir():
        raise UsageError(f"--chart {args.chart}: {chart.parent} is not a folder")
    if chart is not None and chart.is_dir():
        raise UsageError(f"--chart {args.chart}: is a folder; name the SVG file to write")
    if chart is not None and chart.suffix.lower() != ".svg":
        raise UsageError(f"--chart {args.chart}: the chart is SVG; name a .svg file")
    _prefect_ready(args.debug)
    from prefect.settings import get_current_settings

    from flows import history as drill_history
    from pe_dr_cli import stopping

    stopping.start_local_server()
    where = get_current_settings().api.url or "the local Prefect database"
    runs = drill_history.read(args.lab)
    every, apart = history.drills_only(runs), history.not_begun(runs)
    # --limit shortens the table and the chart; the trend still compares with every drill
    drills = every[-args.limit :] if args.limit is not None else every
    if not drills:
        whose = f"of lab {args.lab} " if args.lab else ""
        print(f"  history  no drills {whose}on record at {where}")
        return EXIT_PASSED
    labs = sorted({d.lab for d in drills})
    if chart is not None and len(labs) > 1:
        raise UsageError(
            f"--chart: drills of {len(labs)} labs ({', '.join(labs)}): name one with --lab"
        )
    if chart is not None:
        # written before the table, so a chart that cannot be written prints nothing else
        chart.write_bytes(history.chart_svg(drills, title=f"DR drills of lab {labs[0]}"))
    print(f"  history  {history.summary(drills)} (from {where})")
    print("")
    for line in history.table(drills):
        print(f"  {line}")
    if apart:
        print("")
        print(f"  not drills ({len(apart)}: refused at pre-flight or called off before it began)")
        for line in history.table(apart):
            print(f"  {line}")
    if len(labs) == 1:
        print("")
        for line in history.comparison([d for d in every if d.lab == labs[0]]):
            print(f"    trend  {line}")
    if chart is not None:
        print(f"    chart  {chart}")
    return EXIT_PASSED


# --- retry ---------------------------------------------------------------------------------

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def retry(args: argparse.Namespace) -> int:
    """Retry a run in this process, as Prefect's own local retry does: same run, same parameters."""
    _prefect_ready(args.debug)
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled
    from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs

    from flows.registry import FLOWS
    from pe_dr_cli import stopping

    _show_progress()
    try:
        run_id = UUID(args.flow_run)
    except ValueError:
        raise UsageError(f"{args.flow_run!r} is not a flow run id") from None
    stopping.start_local_server()
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except Exception:
            raise UsageError(f"no flow run {run_id} in this Prefect database") from None
        flow_name = client.read_flow(run.flow_id).name
        if run.parent_task_run_id is not None:
            raise UsageError(f"{run_id} is a subflow run: retry its root run instead")
        flow = FLOWS.get(flow_name)
        if flow is None:
            raise UsageError(f"{run_id} is a run of {flow_name!r}, not a pe-dr-drill flow")
        state_type = run.state.type.value if run.state else "UNKNOWN"
        if state_type == "COMPLETED":
            raise UsageError(
                f"flow run {run_id} passed: a Retry would only replay its cached steps and "
                "measure nothing; start a new drill instead (pe-dr drill)"
            )
        if run.deployment_id is not None:
            client.set_flow_run_state(run_id, Scheduled(message="Retried via pe-dr"), force=True)
            print(f"    retry  {run_id} is scheduled; its deployment's worker picks it up")
            return EXIT_PASSED
        if state_type not in TERMINAL and not args.force:
            raise UsageError(
                f"flow run {run_id} is {state_type}: if its process is gone (killed), "
                "retry with --force"
            )
        lab = (run.parameters.get("parameters") or {}).get("lab") or {}
        root = lab.get("vagrant_root")
        if root and not Path(root).exists():
            raise UsageError(f"the lab of run {run_id} ({root}) is gone: it cannot be retried")
        # A lab lock the killed attempt held is freed by the new attempt (flows.lab_lock).
        client.set_flow_run_state(run_id, Scheduled(message="Retried via pe-dr retry"), force=True)
        run = client.read_flow_run(run_id)
    call_args, call_kwargs = parameters_to_args_kwargs(flow.fn, run.parameters)
    parameters = get_call_parameters(flow.fn, call_args, call_kwargs)
    report_dir = (run.parameters.get("parameters") or {}).get("report_dir") or "reports"
    print(f"    retry  {flow_name} run {run_id} (was {state_type.lower()})", flush=True)

    def again(started: Any) -> Any:
        started(flow, run, None)  # its id is known
        hooked = flow.with_options(on_running=[*flow.on_running_hooks, started])
        return run_flow(flow=hooked, flow_run=run, parameters=parameters, return_type="state")

    return _run_flow(args, report_dir, again)


if __name__ == "__main__":
    sys.exit(main())
