"""The drill journal: verdict from steps and checks, JSON file, Markdown, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

from pe_dr import secrets
from pe_dr.checks.result import CheckResult
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
        "rpo_seconds": None,
        "replication_latency_seconds": None,
        "puppetdb_sync_seconds": None,
        "promotion_seconds": None,
        "reprotect_seconds": None,
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
    assert "- **failover** **FAIL**: linux.vm \\| was compiled by primary" in text


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    token = secrets.remember("0QXsecret-token-abcdef")
    report = _report()
    report.add_check(CheckResult("health", False, f"login with {token} failed"))
    report.notes.append(f"note {token}")
    assert token not in report.to_json()
    assert token not in report.to_markdown()
    assert token not in report.write(tmp_path).read_text()


def _failed_drill() -> DrillReport:
    report = DrillReport(
        flow="dr-drill",
        flow_run_id="4a1f",
        lab={"name": "lab"},
        budgets={"rto_seconds": 900.0, "replication_lag_seconds": 300.0, "failback_seconds": 9.0},
    )
    report.steps += [
        StepRecord(
            "vm-up primary.vm",
            "cached",
            "2026-12-01T10:00:00.000Z",
            "2026-12-01T10:00:00.500Z",
            0,
            chapter="lab-setup",
        ),
        StepRecord(
            "halt-primary",
            "completed",
            "2026-12-01T10:01:00.000Z",
            "2026-12-01T10:01:02.250Z",
            1,
            chapter="failover-drill",
        ),
        StepRecord(
            "measure-failover",
            "failed",
            "2026-12-01T10:01:03.000Z",
            "2026-12-01T10:16:03.000Z",
            1,
            "linux.vm was not compiled by replica.vm",
            chapter="failover-drill",
        ),
    ]
    evidence = {"agents": {"linux.vm": {"served_by": "none", "seen": ["refused", "refused"]}}}
    report.add_check(
        CheckResult(
            "failover", False, "linux.vm was not compiled by replica.vm within 900 s", evidence
        )
    )
    report.measurements["failback_seconds"] = 12.5
    return report


def test_a_failed_drill_leads_with_what_failed_what_it_saw_and_what_to_do() -> None:
    report = _failed_drill()
    text = report.to_markdown()
    lines = text.splitlines()
    assert lines[0] == "# DR drill FAILED"
    failed_at = next(i for i, ln in enumerate(lines) if ln.startswith("**Failed:**"))
    assert failed_at < lines.index("## Figures") < lines.index("## Steps"), "failure first"
    assert lines[failed_at] == (
        "**Failed:** check **failover** at step `measure-failover` of failover-drill, after 1 "
        "attempt(s): linux.vm was not compiled by replica.vm within 900 s"
    )
    assert "| agents.linux.vm.served_by | none |" in lines
    assert "| agents.linux.vm.seen | refused, refused |" in lines
    assert any(
        ln.startswith("**Next:** clear the cause") and "pe-dr retry 4a1f" in ln for ln in lines
    )
    # figures beside their budgets; over budget is a negative margin
    assert "| failback | 12.5 s | 9.0 s | -3.5 s |" in lines
    assert "| RTO | — | 900.0 s | — |" in lines
    # steps by chapter, with durations, not timestamps
    assert "### lab-setup (0.5 s)" in lines and "### failover-drill (902.2 s)" in lines
    assert "| measure-failover | **failed** | 1 | 900.0 s |" in lines
    assert "2026-12-01T10:01:03" not in text.split("## Steps")[1]
    data = report.to_dict()
    assert data["failure"] == {
        "check": "failover",
        "detail": "linux.vm was not compiled by replica.vm within 900 s",
        "evidence": {
            "agents.linux.vm.served_by": "none",
            "agents.linux.vm.seen": "refused, refused",
        },
        "step": "measure-failover",
        "chapter": "failover-drill",
        "attempts": 1,
    }
    assert "pe-dr retry 4a1f" in str(data["next"])
    assert data["steps"][2]["seconds"] == 900.0  # type: ignore[index]


def test_a_passing_drill_has_no_failure_and_no_next_step() -> None:
    report = _report()
    assert report.failure() is None and report.next_step() is None
    text = report.to_markdown()
    assert "**Failed:**" not in text and "**Next:**" not in text
    report.interrupted = "SIGINT (Ctrl-C) during measure-failover"
    assert report.failure() is None
    assert "pe-dr retry run-1" in str(report.next_step())
    assert "**Stopped:** SIGINT (Ctrl-C) during measure-failover" in report.to_markdown()


def test_a_run_called_off_before_it_acted_is_cancelled_not_failed(tmp_path: Path) -> None:
    report = _report()
    report.error = "rejected in the Prefect UI: change freeze: nothing was halted or destroyed"
    report.cancelled = report.error
    assert report.status == "cancelled"
    assert report.failure() is None, "nothing failed: it was called off"
    assert "asks for approval again" in (report.next_step() or "")
    data = json.loads(report.write(tmp_path).read_text())
    assert data["status"] == "cancelled"
    assert data["cancelled"].startswith("rejected in the Prefect UI: change freeze")
    markdown = report.to_markdown()
    assert markdown.startswith("# DR drill CANCELLED")
    assert "**Called off:** rejected in the Prefect UI: change freeze" in markdown


def test_the_markdown_shows_the_replicated_stores_side_by_side() -> None:
    report = _report()
    stores = {
        "classifier": {
            "answered_by": "certificate",
            "marker_on_replica": True,
            "replication_latency_s": 0.4,
            "rpo_seconds": 1.2,
            "lost_writes": 2,
            "sync_age_at_halt_s": None,
            "replication_reported": {"mode": "replica", "status": "running"},
        },
        "puppetdb": {
            "answered_by": None,
            "marker_on_replica": False,
            "replication_latency_s": None,
            "rpo_seconds": None,
            "lost_writes": None,
            "sync_age_at_halt_s": 31.0,
            "replication_reported": None,
        },
    }
    report.add_check(CheckResult("replica_serves", False, "stale", {"stores": stores}))
    text = report.to_markdown()
    assert "## Stores (RPO)" in text
    assert (
        "| classifier | certificate | yes | 0.4 s | 1.2 s | 2 | — | mode replica, status running |"
        in text
    )
    assert "| puppetdb | **none** | **no** | — | — | — | 31.0 s | — |" in text


def test_no_store_table_without_the_replica_check() -> None:
    assert "## Stores" not in _report().to_markdown()
