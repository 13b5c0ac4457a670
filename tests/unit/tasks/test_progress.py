"""The progress artifact: a step never waits on the API for it, what it shows is the latest
news, and it never says more than the truth."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest

from tasks import progress


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[float, str]], threading.Event]:
    """A fake API: each update blocks until released, as a slow or stopping server would."""
    calls: list[tuple[float, str]] = []
    release = threading.Event()

    def create(progress: float, key: str, description: str) -> UUID:
        return uuid4()

    def update(artifact: UUID, progress: float, description: str) -> None:
        assert release.wait(timeout=10), "the test never released the fake API"
        calls.append((progress, description))

    monkeypatch.setattr(progress, "create_progress_artifact", create)
    monkeypatch.setattr(progress, "update_progress_artifact", update)
    return calls, release


def test_a_step_does_not_wait_for_the_progress_artifact(sent: Any) -> None:
    calls, release = sent
    tracker = progress.Tracker("dr-drill", planned=4)
    tracker.start()
    stepped = threading.Event()

    def steps() -> None:
        tracker.running("pre-flight")
        tracker.finished()
        tracker.running("lab-ready")
        tracker.finished()
        tracker.running("check-replication")
        stepped.set()

    threading.Thread(target=steps, daemon=True).start()
    assert stepped.wait(timeout=5), "the steps waited on a stuck API"
    assert calls == [], "nothing reached the API yet: it is blocked, the steps were not"
    release.set()
    tracker.end("failed", "check-replication")
    assert calls, "the last news reached the API by the end"
    share, said = calls[-1]
    assert share == 50.0 and said == "dr-drill: 2 of 4 steps finished; failed at check-replication"
    assert len(calls) < 6, "updates that queued up behind a slow API were merged"


def test_the_share_never_says_more_than_the_truth() -> None:
    tracker = progress.Tracker("dr-drill", planned=2)
    for _ in range(3):  # a run with more steps than the last one
        tracker.finished()
    assert tracker.share() == 99.0
    assert progress.Tracker("dr-drill", planned=None).share() == 0.0


def test_prefects_lines_around_the_bookkeeping_hooks_are_dropped_and_nothing_else() -> None:
    """The lines Prefect 3.9's task engine logs around each hook (task_engine.call_hooks)."""
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("prefect.task_runs")
    kept = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = [Keep()]  # not Prefect's API handler: no flow run here
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for hook in ("_on_running", "_on_finished", "notify_the_team"):
            logger.info("Running hook %r in response to entering state 'Running'", hook)
            logger.info("Hook %r finished running successfully", hook)
        logger.error("An error was encountered while running hook '_on_finished'")
        logger.info("Finished in state Completed()")
    finally:
        logger.handlers[:], logger.level, logger.propagate = kept
    assert seen == [
        "Running hook 'notify_the_team' in response to entering state 'Running'",
        "Hook 'notify_the_team' finished running successfully",
        "An error was encountered while running hook '_on_finished'",
        "Finished in state Completed()",
    ]
