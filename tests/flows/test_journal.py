"""The journal is read from Prefect: steps by chapter with their states, attempts, failures and
checks, a Retry's reused steps as cached, and progress counted against the last complete run.
Tiny flows made the way the drill's are (tasks from actions, chapters through run_chapter), run
as the replication check is (its pre-flight and the lab's lock) on the shared built lab."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.flow_engine import run_flow
from prefect.states import Scheduled

from flows import history as drill_history
from flows import journal
from flows.common import note, run_chapter
from labsim.testing import LabHandle
from pe_dr import interrupts
from pe_dr.checks.result import CheckResult
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr.report import DrillReport
from pe_dr_cli import main as cli
from tasks.checks import verdict
from tasks.common import action_task, named

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
    return run_chapter("replication-check", spec, _drill_body, report_dir=report_dir, history=True)


def _stopped_body(spec: LabSpec) -> None:
    named(look_task, "look-primary")(spec, "primary")
    try:
        raise KeyboardInterrupt  # Ctrl-C, as Prefect's engine creates the next task run ...
    except KeyboardInterrupt:
        raise ValueError("Task run is not set")  # noqa: B904 (... which it answers with this)


@flow(name="journal-stopped-chapter", persist_result=True)
def stopped_chapter(spec: LabSpec) -> Any:
    return run_chapter("journal-stopped-chapter", spec, _stopped_body)


@flow(name="journal-stopped", persist_result=True)
def stopped_drill(spec: LabSpec, report_dir: str) -> Any:
    return run_chapter("replication-check", spec, stopped_chapter, report_dir=report_dir)


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
        ("journal-drill", "lab-roles", "completed", 1),
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
    assert journal.last_step_count("journal-drill", promote=False) == 5
    with get_client(sync_client=True) as client:  # what the wait for unfinished steps reads
        own = journal._task_runs(client, [UUID(record.flow_run_id)])
        asked = [r.id for r in own[:2]]
        assert sorted(r.id for r in journal._task_runs_by_id(client, asked)) == sorted(asked)


def test_a_failed_check_is_journaled_with_its_evidence_and_a_retry_reuses_what_was_done(
    spec: LabSpec,
    lab: tuple[LabHandle, bool, DrillReport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
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
    assert "5 steps finished" in said and "failed at judge" in said, said

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
    assert len(by_step) == 5, "one row per step: the failed attempt's row is replaced"
    assert second.checks[0]["passed"] is True
    assert "attempt 2 of this flow run" in second.notes
    _history_of_three_drills(spec, lab[2], first, tmp_path, monkeypatch, capsys)


def _history_of_three_drills(
    spec: LabSpec,
    built: DrillReport,
    retried: DrillReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The history in this Prefect database (SQLite): the drill that built the lab (passed),
    one that failed and stays failed, and the retried one (failed, then passed), once."""
    monkeypatch.setitem(BROKEN, "replica", True)
    failed_state = drill(spec, str(tmp_path), return_state=True)
    assert failed_state.is_failed()
    failed = _record(failed_state)
    drills = {d.flow_run_id: d for d in drill_history.read(spec.name)}
    assert drills[built.flow_run_id].verdict == "passed"
    assert drills[built.flow_run_id].figures["rto_seconds"] == built.measurements["rto_seconds"]
    assert (drills[failed.flow_run_id].verdict, drills[failed.flow_run_id].failed_check) == (
        "failed",
        "replication",
    )
    again = drills[retried.flow_run_id]
    assert again.verdict == "passed", "the Retry's outcome replaced the failed attempt's"
    assert again.date[:19] == retried.started_at[:19], "the retried drill keeps the date it began"
    everything = drill_history.read()
    assert [d.flow_run_id for d in everything].count(retried.flow_run_id) == 1

    # the artifacts the last drill published: the table newest first, the trend with its chart
    with get_client(sync_client=True) as client:
        table = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=[drill_history.table_key(spec.name)])
            )
        )
        trend = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=[drill_history.trend_key(spec.name)])
            )
        )
    rows = json.loads(str(table[0].data))
    assert rows[0]["flow_run_id"] == failed.flow_run_id and rows[0]["verdict"] == "failed"
    assert [r["flow_run_id"] for r in rows].count(retried.flow_run_id) == 1
    assert str(trend[0].flow_run_id) == failed.flow_run_id
    said = str(trend[0].data)
    assert "**FAILED** at replication" in said and "data:image/svg+xml;base64," in said
    assert "- RTO not measured (the drill failed at replication)" in said

    # `pe-dr history`, in this process (the test server is its Prefect API)
    monkeypatch.setattr(cli, "_quiet_prefect_console", lambda debug: None)
    chart = tmp_path / "trend.svg"
    capsys.readouterr()
    assert cli.main(["history", "--lab", spec.name, "--chart", str(chart)]) == cli.EXIT_PASSED
    out = capsys.readouterr().out
    lines = {line.split()[3]: line.split() for line in out.splitlines() if "-" in line[:8]}
    assert lines[built.flow_run_id[:8]][4:6] == ["drill", "passed"]
    # RTO, lag, failback, RPO, replication latency, PuppetDB sync age, the failed check
    assert lines[failed.flow_run_id[:8]][4:] == [
        "drill",
        "failed",
        "—",
        "1.5",
        "s",
        "—",
        "—",
        "—",
        "—",
        "—",
        "—",
        "replication",
    ]
    assert lines[retried.flow_run_id[:8]][5] == "passed"
    assert "trend  RTO not measured (the drill failed at replication)" in out
    assert f"chart  {chart}" in out
    svg = chart.read_text()
    for key in ("rto_seconds", "replication_lag_seconds", "failback_seconds", "rpo_seconds"):
        assert f'id="series-{key}"' in svg, key
    capsys.readouterr()
    assert cli.main(["history", "--lab", spec.name, "--limit", "1"]) == cli.EXIT_PASSED
    limited = capsys.readouterr().out
    assert "1 drill of lab" in limited
    # the table is shortened; the trend still compares with the drills before it
    assert "the first drill on record" not in limited, limited
    assert "than the last drill" in limited or "the same as the last drill" in limited, limited
    assert cli.main(["history", "--lab", "no-such-lab"]) == cli.EXIT_PASSED
    assert "no drills of lab no-such-lab on record" in capsys.readouterr().out


def test_an_error_a_stop_signal_caused_ends_the_runs_crashed_and_journaled_interrupted(
    spec: LabSpec, tmp_path: Path
) -> None:
    """Not Failed: a run a signal stopped is Crashed, in the UI as in the journal."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KeyboardInterrupt):
            stopped_drill(spec, str(tmp_path))
    finally:
        for sig, handler in handlers.items():  # the stop's clean-up absorbs later signals
            signal.signal(sig, handler)
        interrupts.reset()
    (written,) = tmp_path.glob("drill-*.json")
    record = json.loads(written.read_text())
    assert (record["interrupted"], record["status"]) == ("SIGINT (Ctrl-C)", "interrupted")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(record["flow_run_id"])])  # type: ignore[list-item]
            )
        )
        chapters = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(record["flow_run_id"])])
            )
        )
    assert [r.state_type.value for r in runs] == ["CRASHED"]
    assert [r.state_type.value for r in chapters] == ["CRASHED"]
