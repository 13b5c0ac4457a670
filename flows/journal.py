"""The drill's record, read from Prefect: the root run's task runs and those of its subflows
(names, states, times, run counts, results), and the notes its flows logged.

Nothing is kept in this process while the drill runs, so the record is the same whichever worker
ran which attempt, as long as results are on storage every worker reads (Prefect's result
storage). Steps are grouped by chapter: the flow that ran them (lab-setup, failover-drill, ...).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTextSearch,
    LogFilterTimestamp,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from flows.params import Budgets
from pe_dr.checks.result import CheckResult
from pe_dr.figures import MEASUREMENTS, REGISTRY, Registry
from pe_dr.report import DrillReport, StepRecord
from pe_dr.secrets import scrub
from tasks.common import CHECK_TAG
from tasks.progress import failure_detail, progress_log, step_status

NOTE = "note: "
CHAPTER_MARK = "chapter: "  # the task run flows.common.mark_chapter makes: a mark, not a step
EARLIER = "completed in an earlier attempt of this run"


def note(text: str) -> None:
    """A line for the journal: logged to the run (the journal reads it back from Prefect) and
    shown on the command line."""
    text = scrub(text)
    progress_log.info("     note  %s", text)
    with contextlib.suppress(Exception):  # outside a run (a test calling a body) there is no log
        get_run_logger().info(NOTE + text)


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tree(client: SyncPrefectClient, root: UUID) -> list[FlowRun]:
    """The root run and every subflow run it still stands on (a subflow re-created by a Retry
    replaces the failed one: the parent's task run points at the new run)."""
    runs = [client.read_flow_run(root)]
    frontier = [root]
    while frontier:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
            )
        )
        frontier = [c.id for c in children]
        runs += children
    return runs


def _task_runs(client: SyncPrefectClient, ids: list[UUID]) -> list[TaskRun]:
    found: list[TaskRun] = []
    offset = 0
    while True:
        page = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200, offset=offset
        )
        found += page
        if len(page) < 200:
            return found
        offset += 200


SETTLE_SECONDS = 30.0


def _settled(client: SyncPrefectClient, task_runs: list[TaskRun], root: UUID) -> list[TaskRun]:
    """The task runs once the server has recorded how each step ended, waiting at most
    SETTLE_SECONDS. Prefect's server records task-run states from the engine's events, in
    batches: a step that ended may still read Running for a while (measured: a hundred parallel
    `vm-up` steps on SQLite, whose journal then called the bring-up failed). Only the steps
    still unfinished are read again."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        unsettled = [
            r.id for r in _latest(task_runs, root) if r.state is not None and not r.state.is_final()
        ]
        if not unsettled or time.monotonic() > deadline:
            return task_runs
        time.sleep(0.25)
        fresh = {r.id: r for r in _task_runs_by_id(client, unsettled)}
        task_runs = [fresh.get(r.id, r) for r in task_runs]


def _arrived(
    client: SyncPrefectClient,
    task_runs: list[TaskRun],
    expect: Collection[UUID],
    flow_runs: list[UUID],
    seconds: float,
) -> list[TaskRun]:
    """The task runs once every one this process started (`expect`) is on the server, waiting at
    most `seconds`: the server learns of task runs from events, in batches, so the last steps
    of a run may not be there yet when it ends."""
    deadline = time.monotonic() + seconds
    while not {r.id for r in task_runs} >= set(expect) and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            EventsWorker.drain_all(timeout=2)
        time.sleep(0.1)
        task_runs = _task_runs(client, flow_runs)
    return task_runs


def _task_runs_by_id(client: SyncPrefectClient, ids: list[UUID]) -> list[TaskRun]:
    return client.read_task_runs(
        task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=ids)), limit=len(ids)
    )


def _when(run: TaskRun) -> datetime:
    moment = run.start_time or run.expected_start_time or run.created
    assert moment is not None
    return moment


def record_figures(report: DrillReport, check: CheckResult, registry: Registry = REGISTRY) -> None:
    """The figures a check measured, by the registry, into the report (one it could not
    measure stays None)."""
    for key, value in registry.measured_by(check).items():
        if value is not None:
            report.measurements[key] = value


def _budgets(run: FlowRun) -> dict[str, float]:
    """The budgets of the drill's figures the run was given (the defaults where it named none)."""
    given = (run.parameters.get("parameters") or {}).get("budgets") or {}
    try:
        budgets = Budgets(**given) if isinstance(given, dict) else Budgets()
    except ValueError:  # parameters of another version of the form: the record still reads
        budgets = Budgets()
    return {key: float(getattr(budgets, key)) for key in MEASUREMENTS}


def step_name(run: TaskRun) -> str:
    """The step a task run is. A run cut short (a stop signal) before Prefect gave it its
    task_run_name keeps Prefect's first name for it, `<task name>-<dynamic key[:3]>`
    (prefect/tasks.py, task_engine.py), and the task's name is the step's."""
    suffix = f"-{str(run.dynamic_key)[:3]}"
    if run.dynamic_key and run.name.endswith(suffix):
        return run.name[: -len(suffix)]
    return run.name


Chapters = Callable[[TaskRun], str | None]


def _latest(
    task_runs: list[TaskRun], root: UUID, chapter: Chapters = lambda run: None
) -> list[TaskRun]:
    """The latest run of each step of each chapter, in the order they started; a subflow's place
    in its parent is not a step (its own steps are)."""
    # a subflow re-created by a Retry: its parent's task run points at the current one
    current = {r.state.state_details.child_flow_run_id for r in task_runs if r.state} - {None}
    standing = {root} | current
    latest: dict[tuple[UUID, str | None, str], TaskRun] = {}
    for run in task_runs:
        if run.flow_run_id not in standing or run.state is None:
            continue
        if run.state.state_details.child_flow_run_id is not None:
            continue
        if run.name.startswith(CHAPTER_MARK):  # a mark, not a step
            continue
        key = (run.flow_run_id or root, chapter(run), step_name(run))
        if key not in latest or _when(run) >= _when(latest[key]):
            latest[key] = run
    return sorted(latest.values(), key=_when)


def _check_of(run: TaskRun) -> CheckResult | None:
    """A check's verdict: a passed check's result, or the result a failed one raised with (the
    results of other steps are not read: each is a read of result storage)."""
    if CHECK_TAG not in run.tags:
        return None
    if run.state is None or not (run.state.is_completed() or run.state.is_failed()):
        return None
    try:
        value = run.state.result()
    except BaseException as exc:
        value = getattr(exc, "result", None)
    return value if isinstance(value, CheckResult) else None


def attempt_of(states: Iterable[Any]) -> int:
    """Which attempt of its flow run this is, from the run's states: each start, not each
    Running. Prefect counts a run resumed from a pause (approval in the UI) as run 2, so a
    first run that waited for approval said "attempt 2" (issue 24.4)."""
    attempts, resuming = 0, False
    for state in sorted(states, key=lambda s: s.timestamp):
        if state.type == StateType.RUNNING:
            attempts += 0 if resuming else 1
            resuming = False
        elif state.type == StateType.PAUSED or state.name == "Resuming":
            resuming = True
        elif state.is_final():  # ended: a later start is a Retry
            resuming = False
    return max(1, attempts)


def read(
    root_id: str | UUID,
    *,
    attempt_started: str | None = None,
    interrupted: str | None = None,
    error: str | None = None,
    expect: Collection[UUID] = (),
) -> DrillReport:
    """The record of root run `root_id`: its steps by chapter (the latest run of each), checks,
    figures and notes. Steps done in an earlier attempt of the run, and not run again in this
    one (`attempt_started` on), are `cached`; an earlier attempt's unfinished steps are not this
    attempt's story and are left out."""
    root = UUID(str(root_id))
    with get_client(sync_client=True) as client:
        runs = _tree(client, root)
        flow_names = {f: client.read_flow(f).name for f in {r.flow_id for r in runs}}
        chapter_of = {r.id: flow_names[r.flow_id] for r in runs}
        task_runs = _task_runs(client, list(chapter_of))
        # under a stop the grace is short: what has not arrived in a few seconds is left out
        task_runs = _arrived(
            client, task_runs, expect, list(chapter_of), 5.0 if interrupted else SETTLE_SECONDS
        )
        if interrupted is None:  # (under a stop, a step may really have been cut off Running)
            task_runs = _settled(client, task_runs, root)
        notes = _notes(client, list(chapter_of), attempt_started)
        attempt = attempt_of(client.read_flow_run_states(runs[0].id))
        chapter = _chapters(task_runs, chapter_of)
    top = runs[0]
    lab = (top.parameters.get("parameters") or {}).get("lab") or {}
    report = DrillReport(
        flow=chapter_of[root],
        flow_run_id=str(root),
        lab=lab if isinstance(lab, dict) else {},
        started_at=attempt_started or _iso(top.start_time),
        budgets=_budgets(top),
    )
    for run in _latest(task_runs, root, chapter):
        assert run.state is not None and run.flow_run_id is not None
        status = step_status(run.state)
        earlier = attempt_started is not None and _iso(run.end_time or _when(run)) < attempt_started
        if earlier and status != "completed" and status != "cached":
            continue
        detail = ""
        if earlier:
            status, detail = "cached", EARLIER
        elif status == "failed":
            detail = failure_detail(run.state)
        elif status == "interrupted":
            detail = f"stopped by {interrupted}" if interrupted else scrub(run.state.message or "")
        check = _check_of(run)
        if check is not None:
            report.add_check(check)
            record_figures(report, check)
        report.steps.append(
            StepRecord(
                name=step_name(run),
                status=status,
                started_at=_iso(run.start_time or _when(run)),
                ended_at=_iso(run.end_time) or _iso(_when(run)),
                attempts=0 if status == "cached" else max(1, run.run_count),
                detail=detail,
                chapter=chapter(run) or chapter_of[run.flow_run_id],
            )
        )
    report.notes = [f"attempt {attempt} of this flow run", *notes]
    if interrupted is not None:
        stopped = [s.name for s in report.steps if s.status == "interrupted"]
        report.interrupted = f"{interrupted} during {stopped[0]}" if stopped else interrupted
        report.error = f"interrupted by {report.interrupted}"
    elif error is not None:
        report.error = scrub(error)
    return report


def _chapters(task_runs: list[TaskRun], flow_names: dict[UUID, str]) -> Chapters:
    """Which chapter each step is: the last chapter mark its run made before the step started
    (flows.common.mark_chapter, every attempt's), else the flow that ran it."""
    marks: dict[UUID, list[tuple[datetime, str]]] = {}
    for run in sorted(task_runs, key=_when):
        if run.flow_run_id is not None and run.name.startswith(CHAPTER_MARK):
            marks.setdefault(run.flow_run_id, []).append(
                (_when(run), run.name[len(CHAPTER_MARK) :])
            )

    def chapter(run: TaskRun) -> str | None:
        assert run.flow_run_id is not None
        before = [name for at, name in marks.get(run.flow_run_id, []) if at <= _when(run)]
        return before[-1] if before else flow_names.get(run.flow_run_id)

    return chapter


def _notes(client: SyncPrefectClient, ids: Iterable[UUID], since: str | None) -> list[str]:
    # the run's log lines reach the API in batches: send what is queued before reading
    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=5)
    after = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    logs = client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=list(ids)),
            text=LogFilterTextSearch(query=f'"{NOTE.strip()}"'),
            timestamp=LogFilterTimestamp(after_=cast(Any, after)) if after else None,
        ),
        sort=LogSort.TIMESTAMP_ASC,
    )
    return [log.message[len(NOTE) :] for log in logs if log.message.startswith(NOTE)]


def run_ids(root_id: str | UUID) -> list[str]:
    """The root run and its subflow runs (the command line settles them after a stop)."""
    with get_client(sync_client=True) as client:
        return [str(r.id) for r in _tree(client, UUID(str(root_id)))]


def last_step_count(flow_name: str, *, promote: bool) -> int | None:
    """How many steps the last run of `flow_name` that passed had (for a drill, one with the
    same `promote`; never a negative drill's), or None: what a new run's progress is counted
    against."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=10,
        )
        for run in runs:
            asked = (run.parameters.get("parameters") or {}).get("promote", False)
            if "expected:failure" in (run.tags or []):
                continue  # a negative drill passes when the drill fails: not a full run
            if run.parent_task_run_id is None and bool(asked) == promote:
                tree = _tree(client, run.id)
                return len(_latest(_task_runs(client, [r.id for r in tree]), tree[0].id))
    return None


def failure_sentence(report: DrillReport) -> str:
    failed = [c for c in report.checks if not c["passed"]]
    if failed:
        return f"check {failed[0]['name']} failed: {failed[0]['detail']}"
    steps = [s for s in report.steps if s.status == "failed"]
    if steps:
        return f"step {steps[0].name} failed: {steps[0].detail}"
    return report.error or "the drill failed"


def returned(root_id: str | UUID) -> DrillReport | None:
    """The record the root run's last attempt returned (read from its persisted result)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(str(root_id)))
    return record_of(run.state) if run.state is not None else None


def record_of(state: Any) -> DrillReport | None:
    """The record a root run returned, or raised with (a failed drill's DrillFailed)."""
    try:
        value = state.result(raise_on_failure=False)
    except BaseException:
        return None
    if isinstance(value, DrillReport):
        return value
    record = getattr(value, "record", None)
    return record if isinstance(record, DrillReport) else None
