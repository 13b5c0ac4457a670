"""dr-drill/negative's verdict: it passes only when the drill failed at the check meant to catch
its fault; a drill that passed, failed elsewhere or never ran to a verdict fails it."""

from __future__ import annotations

import pytest

from labsim.faults import parse_fault
from labsim.negative import EXPECTED_CHECK, DrillCannotFail, NegativeParameters, fault_spec, judge
from pe_dr.checks.result import CheckResult
from pe_dr.lab.spec import LabSpec
from pe_dr.report import DrillReport, StepRecord


def _record(*checks: tuple[str, bool], failed_step: str | None = None) -> DrillReport:
    record = DrillReport(flow="dr-drill", flow_run_id="run-1", lab={"name": "lab"})
    for name, passed in checks:
        record.add_check(CheckResult(name, passed, f"{name} {'ok' if passed else 'saw trouble'}"))
        status = "completed" if passed else "failed"
        record.steps.append(StepRecord(f"check-{name}", status, "t0", "t1", 1))
    if failed_step:
        record.steps.append(StepRecord(failed_step, "failed", "t1", "t2", 3, "boom"))
    return record


def test_it_passes_when_the_drill_fails_at_the_check_meant_to_catch_the_fault() -> None:
    record = _record(("health", True), ("failover_ready", False))
    verdict = judge(record, "failover:broken")
    assert "failed at its failover_ready check" in verdict
    assert "failover_ready saw trouble" in verdict


def test_it_fails_when_the_drill_passes() -> None:
    record = _record(("health", True), ("failover_ready", True), ("failover", True))
    assert record.status == "passed"
    with pytest.raises(DrillCannotFail, match="passed with failover:broken in the lab: its "):
        judge(record, "failover:broken")


def test_it_fails_when_the_drill_fails_at_another_check_or_a_step() -> None:
    with pytest.raises(DrillCannotFail, match="failed at its health check, not at its replication"):
        judge(_record(("health", False)), "replication:broken")
    with pytest.raises(DrillCannotFail, match="failed at step halt-primary, not at its primary_"):
        judge(_record(("health", True), failed_step="halt-primary"), "halt:ignored")


def test_it_fails_when_the_drill_left_no_verdict() -> None:
    with pytest.raises(DrillCannotFail, match="left no record"):
        judge(None, "replica:unhealthy")
    stopped = _record(("health", True))
    stopped.interrupted = "SIGTERM during check-replication"
    with pytest.raises(DrillCannotFail, match=r"did not run to a verdict \(SIGTERM"):
        judge(stopped, "replication:broken")


def test_every_fault_it_offers_is_a_labsim_fault_with_an_expected_check() -> None:
    offered = NegativeParameters.model_json_schema()["properties"]["fault"]["enum"]
    assert sorted(offered) == sorted(EXPECTED_CHECK)
    spec = LabSpec()
    for fault in offered:
        parse_fault(fault_spec(fault, spec))  # raises on a spec labsim does not know
    assert fault_spec("halt:ignored", spec) == "halt:ignored=primary.vm"


def test_its_deployment_reads_dr_drill_negative_and_expects_failure() -> None:
    from labsim.negative import deployment

    negative = deployment(LabSpec())
    assert f"{negative.flow_name}/{negative.name}" == "dr-drill/negative"
    assert {"expected:failure", "labsim", "scheduled:monthly"} <= set(negative.tags)
    assert "expected:success" not in negative.tags
    assert negative.parameters == {
        "parameters": {"fault": "failover:broken", "confirm": ["primary.vm"]}
    }
    assert negative.entrypoint is not None and "labsim/negative.py" in negative.entrypoint


def test_serve_negative_needs_a_prefect_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from labsim.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve-negative"]) == 2
    assert "serve-negative needs a Prefect server" in capsys.readouterr().err
