"""The drill journal: verdict from steps and checks, JSON file, Markdown, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

from pe_dr import secrets
from pe_dr.oracles.checks import CheckResult
from pe_dr.report import DrillReport, StepRecord


def _report() -> DrillReport:
    report = DrillReport(flow="dr-drill", flow_run_id="run-1", lab={"name": "lab"})
    report.steps.append(StepRecord("ensure-admin-token", "completed", "t0", "t1", 1))
    report.steps.append(StepRecord("vm-up primary.vm", "cached", "t1", "t2", 0))
    report.add_check(CheckResult("health", True, "17 of 17 services running"))
    report.measurements["rto_seconds"] = 12.5
    return report


def test_passed_when_every_step_and_check_passed(tmp_path: Path) -> None:
    report = _report()
    assert report.status == "passed"
    path = report.write(tmp_path)
    assert path.name.startswith("drill-") and path.suffix == ".json"
    data = json.loads(path.read_text())
    assert data["status"] == "passed"
    assert data["flow_run_id"] == "run-1"
    assert [s["name"] for s in data["steps"]] == ["ensure-admin-token", "vm-up primary.vm"]
    assert data["steps"][0]["attempts"] == 1
    assert data["checks"][0] == {
        "name": "health",
        "passed": True,
        "detail": "17 of 17 services running",
        "evidence": {},
        "seconds": None,
    }
    assert data["measurements"] == {
        "rto_seconds": 12.5,
        "replication_lag_seconds": None,
        "failback_seconds": None,
    }
    assert data["lab"] == {"name": "lab"}
    assert "prefect" in data["versions"]
    assert not list(tmp_path.glob(".drill-*")), "no temporary file is left behind"


def test_a_failed_check_or_step_fails_the_report() -> None:
    report = _report()
    report.add_check(CheckResult("replication", False, "replica still has 240d5f61db0"))
    assert report.status == "failed"
    report = _report()
    report.steps.append(StepRecord("halt-primary", "failed", "t", "t", 3, "boom"))
    assert report.status == "failed"
    report = _report()
    report.error = "interrupted"
    assert report.status == "failed"


def test_a_rerun_check_replaces_the_earlier_verdict() -> None:
    report = _report()
    report.add_check(CheckResult("health", False, "replica down"))
    assert [c["passed"] for c in report.checks] == [False]


def test_markdown_has_the_figures_and_the_failure() -> None:
    report = _report()
    report.add_check(CheckResult("failover", False, "linux.vm | was compiled by primary"))
    text = report.to_markdown()
    assert text.startswith("# DR drill FAILED")
    assert "| 12.5 s | — | — |" in text
    assert "| failover | **FAIL** | linux.vm \\| was compiled by primary |" in text


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    token = secrets.remember("0QXsecret-token-abcdef")
    report = _report()
    report.add_check(CheckResult("health", False, f"login with {token} failed"))
    report.notes.append(f"note {token}")
    assert token not in report.to_json()
    assert token not in report.to_markdown()
    assert token not in report.write(tmp_path).read_text()
