"""The history is rebuilt from each version of the table artifact's own row (the row of the run
that wrote it), never from the copies of other runs' rows it also holds. Versions are plain
objects shaped like Prefect's artifacts: no server."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from flows import history as drill_history
from pe_dr.history import Drill, latest_per_run

KEY = drill_history.table_key("lab-a")


def _row(
    run: str, verdict: str, rto: float | None, lab: str = "lab-a", date: str = "2026-12-01"
) -> dict[str, object]:
    return Drill(
        lab=lab,
        flow_run_id=run,
        flow_run="x",
        date=f"{date}T03:00:00Z",
        verdict=verdict,
        figures={"rto_seconds": rto},
    ).to_row()


def _version(run: str, rows: list[dict[str, object]], key: str = KEY) -> Any:
    return SimpleNamespace(id=uuid4(), key=key, flow_run_id=run, data=json.dumps(rows))


def test_each_version_speaks_for_its_own_run_only() -> None:
    a, b = str(uuid4()), str(uuid4())
    versions = [
        _version(a, [_row(a, "passed", 40.0)]),
        # b's version holds a wrong copy of a's row: it is not a's word
        # (b began a day later: drills of one date are ordered by their random run ids)
        _version(b, [_row(b, "failed", None, date="2026-12-02"), _row(a, "failed", 999.0)]),
    ]
    drills = latest_per_run(d for v in versions if (d := drill_history._own_row(v)) is not None)
    assert [(d.flow_run_id, d.verdict, d.figures["rto_seconds"]) for d in drills] == [
        (a, "passed", 40.0),
        (b, "failed", None),
    ]


def test_a_version_without_its_own_row_or_of_another_lab_or_unreadable_gives_none() -> None:
    a, b = str(uuid4()), str(uuid4())
    assert drill_history._own_row(_version(a, [_row(b, "passed", 1.0)])) is None
    other_lab = _version(a, [_row(a, "passed", 1.0, lab="lab-b")])
    assert drill_history._own_row(other_lab) is None, "a row of lab-b under lab-a's key"
    broken = SimpleNamespace(id=uuid4(), key=KEY, flow_run_id=a, data="{not json")
    assert drill_history._own_row(broken) is None
    no_run = SimpleNamespace(id=uuid4(), key=KEY, flow_run_id=None, data="[]")
    assert drill_history._own_row(no_run) is None


def test_only_a_drill_that_passed_announces_its_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the overdue automation waits for: a passed dr-drill (promoting or not), never a
    failed one, nor a promotion or reprotect run alone."""
    from pe_dr.report import DrillReport, StepRecord

    sent: list[dict[str, object]] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **event: sent.append(event))

    def record(flow: str, status: str = "completed") -> DrillReport:
        r = DrillReport(flow=flow, flow_run_id="run-1", lab={})
        r.steps.append(StepRecord("measure-failover", status, "t0", "t1", 1, chapter=flow))
        return r

    assert drill_history.announce_pass(record("dr-drill"), lab="lab-a")
    assert sent == [
        {
            "event": "pe-dr.drill.passed",
            "resource": {
                "prefect.resource.id": "pe-dr.lab.lab-a",
                "prefect.resource.name": "lab-a",
            },
            "payload": {"flow_run_id": "run-1", "kind": "drill"},
        }
    ]
    for flow, status in (
        ("dr-drill", "failed"),
        ("promotion", "completed"),
        ("reprotect", "completed"),
    ):
        assert not drill_history.announce_pass(record(flow, status), lab="lab-a")
    assert len(sent) == 1
