"""The journal waits, bounded, for the server to record how each step ended: Prefect's server
records task-run states from events in batches, and a step that ended may still read Running."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Running

from flows import journal

ROOT = uuid4()


def _runs(*states: Any) -> list[TaskRun]:
    now = datetime.now(UTC)
    return [
        TaskRun(
            name=f"vm-up agent{n:02d}.vm",
            task_key="vm_up",
            dynamic_key=str(n),
            flow_run_id=ROOT,
            state=state,
            start_time=now,
        )
        for n, state in enumerate(states)
    ]


def test_a_step_still_read_running_is_read_again_until_it_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _runs(Completed(), Running(), Running())
    later = [r.model_copy(update={"state": Completed()}) for r in first]
    asked: list[list[Any]] = []

    def read_again(client: Any, ids: list[Any]) -> list[TaskRun]:
        asked.append(list(ids))
        recorded = later if len(asked) > 1 else [later[1]]  # the third is recorded a read later
        by_id = {r.id: r for r in first} | {r.id: r for r in recorded}
        return [by_id[i] for i in ids]

    monkeypatch.setattr(journal, "_task_runs_by_id", read_again)
    settled = journal._settled(None, first, ROOT)  # type: ignore[arg-type]
    assert [r.state.type.value for r in settled] == ["COMPLETED"] * 3  # type: ignore[union-attr]
    # only the unfinished steps are read again, and a step once recorded is not read again
    assert asked == [[first[1].id, first[2].id], [first[2].id]]


def test_a_step_never_recorded_is_waited_for_no_longer_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck = _runs(Completed(), Running())
    monkeypatch.setattr(journal, "_task_runs_by_id", lambda client, ids: [stuck[1]])
    monkeypatch.setattr(journal, "SETTLE_SECONDS", 0.3)
    settled = journal._settled(None, stuck, ROOT)  # type: ignore[arg-type]
    assert settled[1].state is not None and settled[1].state.type.value == "RUNNING"


def test_finished_steps_are_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(client: Any, ids: Any) -> list[TaskRun]:
        raise AssertionError("read again")

    monkeypatch.setattr(journal, "_task_runs_by_id", never)
    done = _runs(Completed(), Completed())
    assert journal._settled(None, done, ROOT) is done  # type: ignore[arg-type]
