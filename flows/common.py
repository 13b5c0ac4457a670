"""What the flows share: the step recorder that feeds the journal, progress and the final report.

Every flow run records into the report of its ROOT run, so a drill made of subflows has one journal.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Task, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import State

from flows.lab_lock import holding_lab
from pe_dr import interrupts, polling
from pe_dr.checks import CheckResult
from pe_dr.errors import PeDrError
from pe_dr.report import MEASUREMENTS, DrillReport, StepRecord, utc_now
from pe_dr.secrets import scrub
from pe_dr.spec import LabSpec, load_spec
from tasks.checks import CheckFailedError
from tasks.common import root_flow_run_id

progress_log = logging.getLogger("pe_dr.progress")

_reports: dict[str, DrillReport] = {}
# The last report a root run closed in this process (the command line prints its summary).
last_report: DrillReport | None = None
last_report_path: Path | None = None
_progress: dict[str, UUID] = {}
_lock = threading.Lock()
# Every flow run a Recorder ran in this process (root first), for the command line: after an
# interruption it makes sure none of them is left Running.
started_runs: list[str] = []
# The run logger of the root run, for lines from threads without a Prefect context (fan-outs).
_root_logger: Any = None


def _run_logger() -> Any:
    try:
        return get_run_logger()
    except Exception:
        return _root_logger


def say(line: str) -> None:
    """A line for the person waiting: the command line's progress output and the run's log."""
    progress_log.info("  %s", line)
    logger = _run_logger()
    if logger is not None:
        with contextlib.suppress(Exception):
            logger.info(line)


# Long waits in the core (pe_dr.polling) report their progress here.
polling.add_progress_sink(say)
# A SIGTERM that arrived inside a shielded clean-up is raised afterwards as Prefect raises it.
interrupts.terminated = lambda signum: TerminationSignal(signal=signum)


class DrillFailed(PeDrError):
    """The drill ran and a check or a step failed; the report says which."""


def resolve_lab(lab: LabSpec | None) -> LabSpec:
    return lab if lab is not None else load_spec()


def _attempts(state: State[Any]) -> int:
    if state.name == "Cached":
        return 0
    task_run_id = state.state_details.task_run_id
    if task_run_id is None:
        return 1
    try:
        with get_client(sync_client=True) as client:
            return max(1, client.read_task_run(task_run_id).run_count)
    except Exception:
        return 1


class Recorder:
    """Runs tasks as named steps, records each (status, times, attempts) and each check."""

    def __init__(self, flow_name: str, lab: LabSpec, planned_steps: int = 0) -> None:
        self.run_id = str(flow_run.id)
        self.root_id = root_flow_run_id()
        with _lock:
            existing = _reports.get(self.root_id)
            self.is_root = existing is None
            if existing is None:
                existing = DrillReport(
                    flow=flow_name,
                    flow_run_id=self.root_id,
                    lab=lab.model_dump(mode="json"),
                )
                existing.notes.append(f"attempt {flow_run.run_count or 1} of this flow run")
                _reports[self.root_id] = existing
        self.report = existing
        self.planned = planned_steps
        with _lock:
            if self.is_root:
                started_runs.clear()
            started_runs.append(self.run_id)
        if self.is_root:
            global _root_logger
            interrupts.reset()
            with contextlib.suppress(Exception):
                _root_logger = get_run_logger()
            progress_log.info(
                "flow run  %s (resume it with: pe-dr retry %s)", self.root_id, self.root_id
            )
            # progress is a convenience; the journal is the record
            with contextlib.suppress(Exception):
                _progress[self.root_id] = create_progress_artifact(  # type: ignore[assignment]
                    progress=0.0, description=f"{flow_name}: steps done out of {planned_steps}"
                )

    # -- steps ---------------------------------------------------------------------------

    def step(self, task: Task[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Run `task` now, under the step's name in Prefect too; record it; re-raise its failure
        after recording."""
        started = utc_now()
        label = name or task.name
        try:
            state = _named(task, label)(*args, return_state=True, **kwargs)
        except BaseException as exc:  # a stop signal (or a crash): the task has no final state
            self._interrupted([label], started, exc)
            raise
        return self._settle(label, started, state)

    def parallel(self, calls: list[tuple[str, Task[..., Any], tuple[Any, ...]]]) -> list[Any]:
        """Run tasks at once (Prefect's thread pool); record all, then raise the first failure."""
        started = utc_now()
        futures: list[tuple[str, PrefectFuture[Any]]] = [
            (name, _named(task, name).submit(*args)) for name, task, args in calls
        ]
        results, first_error = [], None
        settled = 0
        try:
            for name, future in futures:
                future.wait()
                settled += 1
                try:
                    results.append(self._settle(name, started, future.state))
                except BaseException as exc:
                    first_error = first_error or exc
        except BaseException as exc:
            self._interrupted([name for name, _ in futures[settled:]], started, exc)
            raise
        if first_error is not None:
            raise first_error
        return results

    def _interrupted(self, names: list[str], started: str, exc: BaseException) -> None:
        signum = interrupts.signal_of(exc)
        if signum is None:
            for name in names:
                detail = scrub(str(exc)) or type(exc).__name__
                self._record(StepRecord(name, "failed", started, utc_now(), 1, detail))
            return
        stop = interrupts.begin(signum)
        for name in names:
            self._record(
                StepRecord(name, "interrupted", started, utc_now(), 1, f"stopped by {stop.name}")
            )
        with _lock:
            if self.report.interrupted is None:
                self.report.interrupted = f"{stop.name} during {names[0]}"

    def _settle(self, name: str, started: str, state: State[Any]) -> Any:
        ended = utc_now()
        attempts = _attempts(state)
        if state.is_completed():
            status = "cached" if state.name == "Cached" else "completed"
            result = state.result()
            self._record(StepRecord(name, status, started, ended, attempts))
            if isinstance(result, CheckResult):
                self.report.add_check(result)
            return result
        try:
            state.result()
            raise PeDrError(f"step {name} ended {state.name}")
        except CheckFailedError as exc:
            self.report.add_check(exc.result)
            self._record(StepRecord(name, "failed", started, ended, attempts, exc.result.detail))
            raise
        except BaseException as exc:
            self._record(StepRecord(name, "failed", started, ended, attempts, scrub(str(exc))))
            raise

    def _record(self, step: StepRecord) -> None:
        with _lock:
            # in the order the steps started: the failover's rollback (start-primary-again) runs
            # inside the failing step's own ending, before that step is recorded
            bisect.insort(self.report.steps, step, key=lambda s: s.started_at)
            done = len(self.report.steps)
        line = f"{step.status:>9}  {step.name}"
        if step.attempts > 1:
            line += f" ({step.attempts} attempts)"
        if step.detail:
            line += f": {step.detail}"
        progress_log.info(line)
        with contextlib.suppress(Exception):
            get_run_logger().info(line)
        artifact = _progress.get(self.root_id)
        if artifact is not None and self.planned:
            with contextlib.suppress(Exception):
                update_progress_artifact(artifact, progress=min(100.0, 100.0 * done / self.planned))

    def subflow(self, name: str, flow_fn: Callable[..., Any], parameters: Any) -> Any:
        """Run a sub-flow; one that completed in an earlier attempt is journaled as cached."""
        before, started = len(self.report.steps), utc_now()
        # The root run's heartbeats cover its sub-flows; a sub-flow's own heartbeat thread cost up
        # to a second at its end (Prefect joins a thread that sleeps in 1 s steps).
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            result = flow_fn(parameters)
        if len(self.report.steps) == before:
            self._record(
                StepRecord(
                    name,
                    "cached",
                    started,
                    utc_now(),
                    0,
                    "completed in an earlier attempt of this run",
                )
            )
        if isinstance(result, dict):  # figures a reused sub-flow measured in its own attempt
            for key in MEASUREMENTS:
                if self.report.measurements.get(key) is None and result.get(key) is not None:
                    self.report.measurements[key] = float(result[key])
        return result

    def restore_primary(self, task: Task[..., Any], lab: LabSpec) -> None:
        """The lab is whole before anything else: a primary a crash left halted is started."""
        outcome = self.step(task, lab)
        if outcome:  # None: the primary was not halted
            self.note(str(outcome))

    def note(self, text: str) -> None:
        with _lock:
            self.report.notes.append(scrub(text))
        progress_log.info("     note  %s", scrub(text))
        logger = _run_logger()
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.info("note: %s", scrub(text))

    def measure(self, key: str, result: CheckResult) -> None:
        if result.seconds is not None:
            self.report.measurements[key] = result.seconds

    # -- the end -------------------------------------------------------------------------

    def finish(self, report_dir: str | None, error: BaseException | None) -> Path | None:
        """Close the report of a root run: JSON file, Markdown artifact; raise if it failed."""
        if error is not None:
            signum = interrupts.signal_of(error)
            if signum is not None:
                stop = interrupts.begin(signum)
                with _lock:
                    if self.report.interrupted is None:
                        self.report.interrupted = stop.name
        if error is not None and self.report.error is None:
            if self.report.interrupted is not None:
                self.report.error = f"interrupted by {self.report.interrupted}"
            else:
                self.report.error = scrub(str(error)) or type(error).__name__
        global last_report, last_report_path
        if not self.is_root:
            return None
        self.report.ended_at = utc_now()
        path = self._write_journal(report_dir) if report_dir else None
        last_report, last_report_path = self.report, path
        with contextlib.suppress(Exception):
            create_markdown_artifact(
                key="dr-drill-report",
                markdown=self.report.to_markdown(),
                description=f"{self.report.flow} {self.report.status}",
            )
            artifact = _progress.get(self.root_id)
            if artifact is not None:
                update_progress_artifact(artifact, progress=100.0)
        with _lock:
            _reports.pop(self.root_id, None)
            _progress.pop(self.root_id, None)
        if path is not None:
            progress_log.info("  journal  %s", path)
        if self.report.status != "passed" and error is None:
            raise DrillFailed(_failure_sentence(self.report))
        return path

    def _write_journal(self, report_dir: str) -> Path | None:
        """The journal file; when it cannot be written, the journal goes to stdout instead, and
        the reason is named (the report directory was checked at pre-flight, but disks fill and
        folders go away during an hour-long drill)."""
        try:
            return self.report.write(report_dir)
        except OSError as exc:
            reason = f"{report_dir}: {exc.strerror or exc}"
        self.report.notes.append(f"the journal could not be written to {reason}; it is on stdout")
        with contextlib.suppress(OSError):  # (a worker that went away took stdout with it)
            sys.stdout.write(self.report.to_json())
            sys.stdout.flush()
        line = f"journal NOT written ({reason}): it is printed above, on standard output"
        progress_log.info("  journal  %s", line)
        logger = _run_logger()
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.error(line)
        return None


def _named(task: Task[..., Any], name: str) -> Task[..., Any]:
    """The task under the step's name: what the journal calls a step is what Prefect shows, and
    the name is part of the cache key (one action may run as several steps)."""
    return task if task.name == name else task.with_options(name=name)


def write_open_journals(reason: str, report_dir: str | None) -> list[Path]:
    """Write the journal of every root run still open in this process (the command line's last
    resort when a stop did not finish in time); the runs are marked interrupted by `reason`."""
    with _lock:
        reports = list(_reports.values())
    written = []
    for report in reports:
        report.interrupted = report.interrupted or reason
        report.error = report.error or f"interrupted by {reason}"
        report.ended_at = report.ended_at or utc_now()
        if report_dir:
            with contextlib.suppress(OSError):
                written.append(report.write(report_dir))
    return written


def _failure_sentence(report: DrillReport) -> str:
    failed = [c for c in report.checks if not c["passed"]]
    if failed:
        return f"check {failed[0]['name']} failed: {failed[0]['detail']}"
    steps = [s for s in report.steps if s.status == "failed"]
    if steps:
        return f"step {steps[0].name} failed: {steps[0].detail}"
    return report.error or "the drill failed"


PARENT_CHECK_SECONDS = 1.0


def watch_parent(run_id: str) -> None:
    """In a flow run started by a worker or `pe-dr serve` (a child process of it): when that
    parent goes away, stop this run as a stop signal would (SIGTERM to itself: the primary is
    started again, the journal written, the run ends Crashed and can be retried).

    A process worker that is stopped exits at once and leaves its flow runs running in their own
    sessions, unseen: nothing would record how they end if the machine went down next."""
    import os
    import signal

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                say(
                    f"the worker or server that ran flow run {run_id} (process {parent}) "
                    "stopped: stopping this run too"
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="pe-dr-parent-watch", daemon=True).start()


def run_recorded(
    flow_name: str,
    lab: LabSpec | None,
    body: Callable[[Recorder, LabSpec], Any],
    *,
    planned_steps: int,
    report_dir: str | None = "reports",
    confirm: list[str] | tuple[str, ...] = (),
    promote: bool = False,
) -> Any:
    """Resolve the lab, run `body` with a Recorder, and always close the report.

    A root run starts with pre-flight (flows.preflight: nothing acts on the lab until it passed)
    and holds the lab's lock for the rest; its subflows run inside both."""
    from flows import preflight

    spec = resolve_lab(lab)
    rec = Recorder(flow_name, spec, planned_steps)
    outcome, error = None, None
    try:
        if rec.is_root and deployment.id:  # run by a worker or `pe-dr serve`
            watch_parent(rec.run_id)
        if rec.is_root:
            needs = preflight.needs_for(
                flow_name, spec, confirm=confirm, promote=promote, report_dir=report_dir
            )
            for note in rec.step(preflight.preflight, spec, needs, name="pre-flight"):
                rec.note(note)
        # One drill per lab: only the root run holds the lab (its subflows run inside it).
        with holding_lab(spec, note=rec.note) if rec.is_root else contextlib.nullcontext():
            outcome = body(rec, spec)
    except BaseException as exc:
        error = exc
        raise
    finally:
        with interrupts.shielded():
            rec.finish(report_dir, error)
    return outcome
