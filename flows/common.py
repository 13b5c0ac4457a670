"""What the flows share: how a root run opens and closes (pre-flight, the lab's lock, progress,
the journal), and the lines shown to the person waiting.

A chapter flow run as a subflow only runs its body: the root run has checked, holds the lab, and
reads the whole record from Prefect when it ends (flows.journal).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from prefect import Flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Cancelled, State
from pydantic import BaseModel

from flows import history as drill_history
from flows import journal
from flows.journal import CHAPTER_MARK, note
from flows.lab_lock import holding_lab
from flows.wiring import wire
from pe_dr import interrupts
from pe_dr.errors import CalledOff, PeDrError, PreconditionError
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr.report import DrillReport, utc_now
from pe_dr.secrets import scrub
from pe_dr.settings import settings
from pe_dr.stdio import survive_closed_output
from tasks import progress
from tasks.common import named, root_flow_run_id
from tasks.lab import lab_roles
from tasks.progress import Tracker, progress_log, tracking

__all__ = [
    "Chapter",
    "DrillFailed",
    "chapter",
    "note",
    "resolve_lab",
    "run_chapter",
    "say",
    "watch_parent",
]

R = TypeVar("R")


def say(line: str) -> None:
    """A line for the person waiting: the command line's progress output and the run's log."""
    progress_log.info("  %s", line)
    with contextlib.suppress(Exception):  # (a fan-out thread has no run context)
        get_run_logger().info(line)


class DrillFailed(PeDrError):
    """The drill ran and a check or a step failed; its `record` says which."""


class JournalNotWritten(PeDrError):
    """The drill's journal could not be written (a full disk, a folder gone): the run fails."""


def resolve_lab(lab: LabSpec | None) -> LabSpec:
    return lab if lab is not None else load_spec()


PARENT_CHECK_SECONDS = 1.0


def watch_parent(run_id: str) -> None:
    """In a flow run started by a worker or `pe-dr serve` (a child process of it): when that
    parent goes away, stop this run as a stop signal would (SIGTERM to itself: the primary is
    started again, the journal written, the run ends Crashed and can be retried).

    A process worker that is stopped exits at once and leaves its flow runs running in their own
    sessions, unseen: nothing would record how they end if the machine went down next."""
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


# a log line: where a chapter begins in its run (the journal groups steps by it)
_chapter: contextvars.ContextVar[str | None] = contextvars.ContextVar("chapter", default=None)


@task(name="chapter", task_run_name=CHAPTER_MARK + "{name}", cache_policy=NO_CACHE)
def _chapter_begins(name: str) -> None:
    """A mark in the run, not a step: the journal groups the steps that start after it under
    `name` (a task run, so that it reaches Prefect whatever the logging level)."""


# What a stop signal does in each chapter that changes the lab's roles, as the command line says
# when one begins (pe_dr_cli.stopping); the other chapters only stop and write the journal.
STOP_EFFECTS = {
    "failover-drill": "a primary the drill halted is started again and the journal is written",
    "promotion": (
        "the promotion stops where it is: a primary it destroyed is not brought back, the journal "
        "is written, and a Retry resumes the promotion"
    ),
    "reprotect": (
        "the reprotect stops where it is: the promoted primary keeps serving, the journal is "
        "written, and a Retry resumes the reprotect"
    ),
}


def stop_effect_of(chapter: str) -> str:
    return STOP_EFFECTS.get(chapter, interrupts.PLAIN_STOP)


def mark_chapter(name: str) -> None:
    """The steps that start from now on are chapter `name`'s."""
    _chapter.set(name)
    interrupts.set_stop_effect(stop_effect_of(name))
    state = _chapter_begins(name, return_state=True)
    progress.started(state.state_details.task_run_id)


P = TypeVar("P", bound=BaseModel)


class Chapter(Flow[[P], Any], Generic[P]):
    """A chapter of the tutorial as a Prefect flow. Run alone (a deployment, `pe-dr`, a test) it
    is a root run: pre-flight, the lab's lock around its body, the journal at its end. Called
    from inside a run (the drill's chapters, or reprotect's replica activation) its body runs in
    that run, its steps marked as the chapter's: no flow run of its own, which would cost 0.7 to
    2 s to open and close (more than most steps), and nothing the drill's Retry depends on."""

    def __init__(
        self,
        body: Callable[[LabSpec, P], Any],
        name: str,
        model: type[P],
        *,
        history: bool = False,
    ) -> None:
        self.body, self.model = body, model

        def run(parameters: P) -> Any:
            return run_chapter(
                name,
                parameters.lab,  # type: ignore[attr-defined]
                lambda spec: body(spec, parameters),
                report_dir=getattr(parameters, "report_dir", "reports"),
                confirm=getattr(parameters, "confirm", ()),
                promote=getattr(parameters, "promote", False),
                history=history,
            )

        # what Prefect reads for the form, the entrypoint and the docs: the body's module and
        # name, one parameter of the chapter's model
        run.__name__, run.__qualname__ = body.__name__, body.__qualname__
        run.__module__, run.__doc__ = body.__module__, body.__doc__
        run.__annotations__ = {"parameters": model, "return": Any}
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("parameters", _POSITIONAL, default=model(), annotation=model)],
            return_annotation=Any,
        )
        super().__init__(fn=run, name=name, persist_result=True, log_prints=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if FlowRunContext.get() is None or kwargs.get("return_state"):
            return super().__call__(*args, **kwargs)
        (parameters,) = [*args, *kwargs.values()]
        return self.inline(parameters)

    def inline(self, parameters: P) -> Any:
        """The chapter's body in the current run, its steps marked as the chapter's."""
        enclosing = _chapter.get() or str(flow_run.flow_name)
        mark_chapter(self.name)
        with errors_as_stops():
            result = self.body(resolve_lab(parameters.lab), parameters)  # type: ignore[attr-defined]
        # (no mark while an error unwinds: no step of the enclosing chapter follows it)
        mark_chapter(enclosing)
        return result


_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD


def chapter(*, history: bool = False) -> Callable[[Callable[[LabSpec, P], Any]], Chapter[P]]:
    """`@chapter()` over `def failover_drill(spec, parameters: Model)`: the chapter as a flow
    named after its function (`failover-drill`), its form the model's (see Chapter)."""

    def wrap(body: Callable[[LabSpec, P], Any]) -> Chapter[P]:
        hints = typing.get_type_hints(body)
        model = hints[list(inspect.signature(body).parameters)[1]]
        return Chapter(body, body.__name__.replace("_", "-"), model, history=history)

    return wrap


def run_chapter(
    flow_name: str,
    lab: LabSpec | None,
    body: Callable[[LabSpec], R],
    *,
    report_dir: str | None = "reports",
    confirm: list[str] | tuple[str, ...] = (),
    promote: bool = False,
    history: bool = False,
) -> R | DrillReport | State[Any]:
    """Run a flow's body. As a subflow: just the body. As a root run: pre-flight first (nothing
    acts on the lab until it passed), the lab's lock around the body, and the record read from
    Prefect at the end, written as the journal and returned (or attached, as `record`, to what
    the run raises; a run called off before it acted returns a Cancelled state with it). With
    `history`, the root run also publishes the lab's drill history and trend
    (flows.history)."""
    spec = resolve_lab(lab)
    if root_flow_run_id() != str(flow_run.id):
        with errors_as_stops():
            return body(spec)
    return _run_root(flow_name, spec, body, report_dir, tuple(confirm), promote, history)


def _run_root(
    flow_name: str,
    spec: LabSpec,
    body: Callable[[LabSpec], R],
    report_dir: str | None,
    confirm: tuple[str, ...],
    promote: bool,
    history: bool = False,
) -> DrillReport | State[Any]:
    from flows import preflight

    wire()
    run_id = str(flow_run.id)
    attempt_started = utc_now()
    interrupts.reset()
    interrupts.set_stop_effect(stop_effect_of(flow_name))
    _chapter.set(None)  # (a process runs many flows: no chapter of an earlier one)
    progress.started_runs(reset=True)
    if settings().rerun_command:  # its lab goes with the command: no Retry to offer
        progress_log.info("flow run  %s", run_id)
    else:
        progress_log.info("flow run  %s (resume it with: pe-dr retry %s)", run_id, run_id)
    tracker = Tracker(flow_name, planned=_planned(str(flow_run.flow_name), promote))
    tracker.start()
    if history:
        drill_history.warm_up()
    error: BaseException | None = None
    pe_version: str | None = None
    try:
        with (
            errors_as_stops(),
            tracking(tracker),
            # The root run's heartbeats cover its subflows; a subflow's own heartbeat thread cost
            # up to a second at its end (Prefect joins a thread that sleeps in 1 s steps).
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        ):
            if deployment.id:  # run by a worker or `pe-dr serve`, which may go first
                survive_closed_output()
                watch_parent(run_id)
            # the roles as PE has them now: a promotion swaps the spec's primary and replica
            roles = lab_roles(spec)
            pe_version = roles.pe_version
            if roles.spec != spec:
                spec = roles.spec
                note(f"the lab's roles: {roles.detail}")
            needs = preflight.needs_for(
                flow_name, spec, confirm=confirm, promote=promote, report_dir=report_dir
            )
            for line in named(preflight.preflight, "pre-flight")(spec, needs):
                note(line)
            refusal = roles.refusal(flow_name)
            if refusal is not None:
                raise PreconditionError(refusal)
            with holding_lab(spec, note=note):  # one drill per lab
                body(spec)
    except CalledOff as exc:  # approval rejected or not given: nothing acted on the lab
        error = exc
    except BaseException as exc:
        error = exc
        raise
    finally:
        with interrupts.shielded():
            record = _close(
                flow_name, spec, run_id, attempt_started, report_dir, error, tracker, pe_version
            )
            if history:
                for line in drill_history.publish_quietly(
                    record, lab=spec.name, flow_run=str(flow_run.name)
                ):
                    progress_log.info("    trend  %s", line)
                if not report_dir or record.journal_path is not None:  # (else not a pass)
                    drill_history.announce_pass(record, lab=spec.name)
            if error is not None:
                error.record = record  # type: ignore[attr-defined]
    if isinstance(error, CalledOff):
        return Cancelled(message=record.cancelled, data=record)
    if record.status != "passed":
        failed = DrillFailed(journal.failure_sentence(record))
        failed.record = record  # type: ignore[attr-defined]
        raise failed
    if report_dir and record.journal_path is None:
        # the record auditors read is lost: a passed drill without it is not a pass
        lost = JournalNotWritten(
            f"the drill passed, but its journal could not be written to {report_dir} (it was "
            "printed on standard output): free the space or fix the folder, then drill again"
        )
        lost.record = record  # type: ignore[attr-defined]
        raise lost
    return record


@contextlib.contextmanager
def errors_as_stops() -> Iterator[None]:
    """A run stopped by a signal raises that signal, so that Prefect marks it Crashed (a Retry
    resumes it) and not Failed: an error a signal caused (a SIGTERM landing as Prefect creates a
    task run ends in its ValueError("Task run is not set")) is raised as the signal, chained to
    the error; any other error as itself."""
    try:
        yield
    except Exception as exc:
        signum = interrupts.signal_of(exc)
        if signum is None:
            raise
        if signum == signal.SIGINT:
            raise KeyboardInterrupt() from exc
        raise TerminationSignal(signal=signum) from exc


REPORT_KEY = "dr-drill-report"


def _only_the_latest_report(run_id: str, latest: Any) -> None:
    """The run keeps this attempt's report artifact only. The UI lists a run's artifacts by id,
    and ids are random: after a Retry that passed, the failed attempt's report was as likely
    listed first (issue 24.4). Each attempt's record stays in its own journal file."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]),
                key=ArtifactFilterKey(any_=[REPORT_KEY]),
            )
        )
        for earlier in reports:
            if str(earlier.id) != str(latest):
                client.delete_artifact(earlier.id)


def _planned(flow_name: str, promote: bool) -> int | None:
    """How many steps this flow's last complete run had (None before one): the total progress
    is counted against."""
    with contextlib.suppress(Exception):  # progress is a convenience; the journal is the record
        return journal.last_step_count(flow_name, promote=promote)
    return None


def _close(
    flow_name: str,
    spec: LabSpec,
    run_id: str,
    attempt_started: str,
    report_dir: str | None,
    error: BaseException | None,
    tracker: Tracker,
    pe_version: str | None = None,
) -> DrillReport:
    """The record from Prefect, written as the journal and the run's report artifact."""
    stop = interrupts.current()
    signum = interrupts.signal_of(error) if error is not None else None
    if signum is not None:
        stop = interrupts.seen(signum)
    reason = None if error is None or stop else (scrub(str(error)) or type(error).__name__)
    try:
        record = journal.read(
            run_id,
            attempt_started=attempt_started,
            interrupted=stop.name if stop else None,
            error=reason,
            expect=progress.started_runs(),
        )
        if not record.lab:  # a run that took its lab from PE_DR_LAB_SPEC has none in its parameters
            record.lab = spec.model_dump(mode="json")
    except Exception as exc:  # the API went away: what this process knows is still said
        record = DrillReport(flow=flow_name, flow_run_id=run_id, lab=spec.model_dump(mode="json"))
        record.started_at = attempt_started
        record.interrupted = stop.name if stop else None
        record.error = reason or (f"interrupted by {stop.name}" if stop else None)
        record.notes.append(f"the steps could not be read back from Prefect: {scrub(str(exc))}")
        if record.error is None:
            record.error = "the drill's steps could not be read back from Prefect"
    if isinstance(error, CalledOff):
        record.cancelled = scrub(str(error))
    record.pe_version_reported = pe_version
    record.ended_at = utc_now()
    path = write_journal(record, report_dir) if report_dir else None
    record.journal_path = str(path) if path is not None else None
    with contextlib.suppress(Exception):
        report = create_markdown_artifact(
            key=REPORT_KEY,
            markdown=record.to_markdown(),
            description=f"{record.flow} {record.status}",
        )
        _only_the_latest_report(run_id, report)
    failed = [s.name for s in record.steps if s.status in {"failed", "interrupted"}]
    tracker.end(record.status, failed[0] if failed else None)
    reused: dict[str, int] = {}
    for step in record.steps:  # not run again, or a cache hit: done in an earlier attempt
        if step.status == "cached":
            reused[step.chapter] = reused.get(step.chapter, 0) + 1
    for chapter, count in reused.items():
        progress_log.info("   cached  %s: %d steps done in an earlier attempt", chapter, count)
    if path is not None:
        progress_log.info("  journal  %s", path)
    return record


def write_journal(record: DrillReport, report_dir: str) -> Any:
    """The journal file; when it cannot be written, the journal goes to stdout instead, and
    the reason is named (the report directory was checked at pre-flight, but disks fill and
    folders go away during an hour-long drill)."""
    try:
        return record.write(report_dir)
    except OSError as exc:
        reason = f"{report_dir}: {exc.strerror or exc}"
    record.notes.append(f"the journal could not be written to {reason}; it is on stdout")
    with contextlib.suppress(OSError):  # (a worker that went away took stdout with it)
        sys.stdout.write(record.to_json())
        sys.stdout.flush()
    line = f"journal NOT written ({reason}): it is printed above, on standard output"
    progress_log.info("  journal  %s", line)
    with contextlib.suppress(Exception):
        get_run_logger().error(line)
    return None
