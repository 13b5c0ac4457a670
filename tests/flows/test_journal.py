"""The journal is read from Prefect: steps by chapter with their states, attempts, failures and
checks, a Retry's reused steps as cached, and progress counted against the last complete run.
Tiny flows made the way the drill's are (tasks from actions, chapters through run_chapter), run
as the replication check is (its pre-flight and the lab's lock) on the shared built lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Scheduled

from labsim.testing import LabHandle
from pe_dr.flows import journal
from pe_dr.flows.common import note, run_chapter
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr.oracles.checks import CheckResult
from pe_dr.report import DrillReport
from pe_dr.tasks.checks import verdict
from pe_dr.tasks.common import action_task, named

pytestmark = pytest.mark.slow

BROKEN: dict[str, bool] = {"replica": False}


def look(lab: Lab, what: str) -> str:
    return f"looked at {what}"


def judge(lab: Lab) -> CheckResult:
    broken = BROKEN["replica"]
    seen = {"replica.vm": "behind" if broken else "current"}
    return CheckResult(
        "replication", not broken, f"replica is {seen['replica.vm']}", seen, seconds=1.5
    )


look_task = action_task(look, timeout=30, retries=0)
judge_task = action_task(judge, timeout=30, retries=0, then=verdict)


def _setup_body(spec: LabSpec) -> None:
    named(look_task, "look-primary")(spec, "primary")
    named(look_task, "look-gitlab")(spec, "gitlab")


@flow(name="journal-setup", persist_result=True)
def setup_chapter(spec: LabSpec) -> Any:
    return run_chapter("journal-setup", spec, _setup_body)


def _drill_body(spec: LabSpec) -> None:
    setup_chapter(spec)
    note("the lab was whole")
    judge_task(spec)


@flow(name="journal-drill", persist_result=True)
def drill(spec: LabSpec, report_dir: str) -> Any:
    return run_chapter("replication-check", spec, _drill_body, report_dir=report_dir)


@pytest.fixture
def spec(built: LabHandle) -> LabSpec:
    return load_spec(None)  # the built lab's, from its environment


def progress_of(run_id: str) -> tuple[float, str]:
    """The run's progress artifact: its share and what it says."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),  # type: ignore[list-item]
                type={"any_": ["progress"]},  # type: ignore[arg-type]
            )
        )
    return float(artifact.data), str(artifact.description)  # type: ignore[arg-type]


def _record(state: Any) -> DrillReport:
    record = journal.record_of(state)
    assert record is not None, "a root run returns its record, or raises with it"
    return record


def test_a_passing_run_returns_its_record_read_from_prefect(
    spec: LabSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BROKEN, "replica", False)
    state = drill(spec, str(tmp_path), return_state=True)
    assert state.is_completed()
    record = _record(state)
    assert isinstance(state.result(), DrillReport), "dr_drill-style flows return the record"
    assert record.status == "passed"
    steps = [(s.chapter, s.name, s.status, s.attempts) for s in record.steps]
    assert steps == [
        ("journal-drill", "pre-flight", "completed", 1),
        ("journal-setup", "look-primary", "completed", 1),
        ("journal-setup", "look-gitlab", "completed", 1),
        ("journal-drill", "judge", "completed", 1),
    ]
    (check,) = record.checks
    assert check["name"] == "replication" and check["passed"] is True
    assert record.measurements["replication_lag_seconds"] == 1.5
    assert "the lab was whole" in record.notes
    written = list(tmp_path.glob("drill-*.json"))
    assert len(written) == 1 and '"status": "passed"' in written[0].read_text()
    assert progress_of(record.flow_run_id)[0] == 100.0
    assert journal.last_step_count("journal-drill", promote=False) == 4


def test_a_failed_check_is_journaled_with_its_evidence_and_a_retry_reuses_what_was_done(
    spec: LabSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BROKEN, "replica", True)
    state = drill(spec, str(tmp_path), return_state=True)
    assert state.is_failed()
    first = _record(state)
    assert first.status == "failed"
    failed = [(s.name, s.detail) for s in first.steps if s.status == "failed"]
    assert failed == [("judge", "replica is behind")]
    (check,) = first.checks
    assert check["passed"] is False and check["evidence"] == {"replica.vm": "behind"}
    # a failed run's progress is not 100 %, and says where it failed
    share, said = progress_of(first.flow_run_id)
    assert share < 100.0, "every step finished, but the run failed: not 100 %"
    assert "4 steps finished" in said and "failed at judge" in said, said

    # the Retry, as `pe-dr retry` and the UI make it: the same run, from the top
    monkeypatch.setitem(BROKEN, "replica", False)
    run_id = first.flow_run_id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Scheduled(name="AwaitingRetry"), force=True)  # type: ignore[arg-type]
        run = client.read_flow_run(run_id)  # type: ignore[arg-type]
    again = run_flow(
        flow=drill,
        flow_run=run,
        parameters={"spec": spec, "report_dir": str(tmp_path)},
        return_type="state",
    )
    assert again.is_completed()
    second = journal.returned(run_id)
    assert second is not None and second.flow_run_id == run_id
    assert second.status == "passed"
    by_step = {(s.chapter, s.name): s for s in second.steps}
    assert by_step[("journal-setup", "look-primary")].status == "cached"
    assert by_step[("journal-setup", "look-primary")].attempts == 0
    assert by_step[("journal-drill", "judge")].status == "completed"
    assert len(by_step) == 4, "one row per step: the failed attempt's row is replaced"
    assert second.checks[0]["passed"] is True
    assert "attempt 2 of this flow run" in second.notes
