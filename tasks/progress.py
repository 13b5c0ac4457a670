"""What the person waiting sees while a drill runs: one line per finished step, and the root run's
progress artifact (the share of planned steps finished, naming the step running now).

Fed by Prefect's own state hooks on every drill task (`HOOKS`), so it needs no wrapper around the
task calls. The tracker of a root run lives in a context variable the root run sets: Prefect runs
subflows inline and copies the context into its task threads, so every task of the run finds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import StateHookCallable

from pe_dr.checks.result import CheckResult
from pe_dr.secrets import scrub

progress_log = logging.getLogger("pe_dr.progress")


def step_status(state: State[Any]) -> str:
    """A step's status in the drill's words, from its Prefect state."""
    if state.is_completed():
        return "cached" if state.name == "Cached" else "completed"
    if state.is_failed():
        return "failed"
    if state.is_crashed() or state.is_cancelled() or state.is_cancelling():
        return "interrupted"
    return "interrupted"  # a run left Pending or Running: its process went away


def failure_detail(state: State[Any]) -> str:
    """What a failed step ended with: a failed check's own sentence, else the error's as
    Prefect recorded it (the state's message is in the API; the exception itself is on result
    storage, which another worker may not read)."""
    try:
        state.result()
    except BaseException as exc:
        check = getattr(exc, "result", None)
        if isinstance(check, CheckResult):
            return scrub(check.detail)
    message = state.message or ""
    if message.startswith(RAISED):
        _, _, said = message[len(RAISED) :].partition(": ")
        message = said or message
    return scrub(message)


# how Prefect words a task run's failure: "... exception ApiError: classifier API ... 503: ..."
RAISED = "Task run encountered an exception "


@dataclass
class Tracker:
    """One root run's progress: `planned` is the step count of this flow's last complete run
    (None before one exists), so the share is computed, never declared.

    The artifact is updated by a thread of its own, latest news first: a step never waits on
    the API for it, and no API call runs in the main thread while a stop signal unwinds it (a
    call cut short by a signal there once took the primary's restart down with it)."""

    flow: str
    planned: int | None
    artifact: UUID | None = None
    done: int = 0
    current: str = ""
    waiting_for: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: tuple[float, str] | None = None
    _closing: bool = False
    _wake: threading.Event = field(default_factory=threading.Event)
    _sender: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(Exception):  # progress is a convenience; the journal is the record
            self.artifact = cast(
                UUID,
                create_progress_artifact(
                    progress=0.0, key="dr-drill-progress", description=self._describe()
                ),
            )
        if self.artifact is not None:
            # the run's context (its API and settings) goes with the thread
            send = contextvars.copy_context().run
            self._sender = threading.Thread(
                target=send, args=(self._send,), name="pe-dr-progress", daemon=True
            )
            self._sender.start()

    def share(self) -> float:
        """Never more than the truth: a run with more steps than the last one stays below 100 %
        until it has passed."""
        if not self.planned:
            return 0.0
        return min(99.0, 100.0 * self.done / self.planned)

    def _describe(self, ending: str | None = None) -> str:
        counted = f"{self.done} of {self.planned}" if self.planned else f"{self.done}"
        now = ending or (f"now: {self.current}" if self.current else "starting")
        if self.waiting_for and not ending:
            now = f"waiting for {self.waiting_for}"
        return f"{self.flow}: {counted} steps finished; {now}"

    def _update(self, progress: float, ending: str | None = None) -> None:
        with self._lock:
            self._pending = (progress, self._describe(ending))
        self._wake.set()

    def _send(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, None
                closing = self._closing
            if pending is not None and self.artifact is not None:
                with contextlib.suppress(Exception):
                    update_progress_artifact(
                        self.artifact, progress=pending[0], description=pending[1]
                    )
            if closing:
                return

    def running(self, name: str) -> None:
        with self._lock:
            self.current, self.waiting_for = name, ""
        self._update(self.share())

    def finished(self) -> None:
        with self._lock:
            self.done += 1
        self._update(self.share())

    def waiting(self, what: str) -> None:
        """The run waits, between steps, for `what` (approval in the UI): said in place of the
        last step, which had ended (a first run waiting for approval read "0 %, now: <the step
        before>")."""
        with self._lock:
            self.waiting_for = what
        self._update(self.share())

    def end(self, status: str, failed_step: str | None) -> None:
        if status == "passed":
            self._update(100.0, "passed")
        else:  # the share stays where the run stopped
            where = f" at {failed_step}" if failed_step else ""
            self._update(self.share(), f"{status}{where}")
        with self._lock:
            self._closing = True
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=SEND_WAIT_SECONDS)


SEND_WAIT_SECONDS = 5.0  # for the last update, at the run's end


_tracker: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "pe_dr_tracker", default=None
)


@contextlib.contextmanager
def tracking(tracker: Tracker) -> Iterator[Tracker]:
    token = _tracker.set(tracker)
    try:
        yield tracker
    finally:
        _tracker.reset(token)


def waiting(what: str) -> None:
    """Tell the progress of the run under way that it waits for `what`."""
    tracker = _tracker.get()
    if tracker is not None:
        tracker.waiting(what)


def say_step(status: str, name: str, attempts: int, detail: str) -> None:
    line = f"{status:>9}  {name}"
    if attempts > 1:
        line += f" ({attempts} attempts)"
    if detail:
        line += f": {detail}"
    progress_log.info(line)


# The task runs this process started since the root run began: the journal waits until Prefect's
# server has recorded each (it learns of them from events, in batches, after the fact).
_started: set[UUID] = set()
_started_lock = threading.Lock()


def started_runs(*, reset: bool = False) -> set[UUID]:
    with _started_lock:
        runs = set(_started)
        if reset:
            _started.clear()
        return runs


def started(task_run_id: UUID | None) -> None:
    if task_run_id is not None:
        with _started_lock:
            _started.add(task_run_id)


def _on_running(task: Any, task_run: TaskRun, state: State[Any]) -> None:
    started(task_run.id)
    tracker = _tracker.get()
    if tracker is not None:
        tracker.running(task_run.name)


def _on_finished(task: Any, task_run: TaskRun, state: State[Any]) -> None:
    started(task_run.id)  # (a cached step is never Running)
    status = step_status(state)
    detail = failure_detail(state) if status == "failed" else ""
    say_step(status, task_run.name, task_run.run_count or 1, detail)
    tracker = _tracker.get()
    if tracker is not None:
        tracker.finished()


# every drill task's state hooks (tasks.common)
ON_RUNNING: list[StateHookCallable] = [_on_running]
ON_FINISHED: list[StateHookCallable] = [_on_finished]


class _QuietHooks(logging.Filter):
    """Drop Prefect's two INFO lines around each run of these bookkeeping hooks ("Running hook
    '_on_running' in response to …", "Hook '_on_running' finished running successfully"): four
    of a step's six log lines, each sent to the API, half a step's orchestration cost
    (`python -m benchmarks.task_overhead`). An error in a hook is still logged."""

    NAMES = tuple(f"'{hook.__name__}'" for hook in (*ON_RUNNING, *ON_FINISHED))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        text = record.getMessage()
        if text.startswith("Running hook ") or text.startswith("Hook "):
            return not any(name in text[:40] for name in self.NAMES)
        return True


QUIET_HOOKS = _QuietHooks()
logging.getLogger("prefect.task_runs").addFilter(QUIET_HOOKS)
