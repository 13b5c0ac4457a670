"""Retake docs/html-report.png: the auditors' page (`pe-dr report --html`) of a sample failed
drill, with an approval and the lab's latest negative drill, in headless Chromium.

Usage: .venv/bin/python scripts/html_report_sample.py [OUT.png]   (default: docs/html-report.png)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pe_dr import history, report_html
from pe_dr.checks.result import CheckResult
from pe_dr.history import Drill
from pe_dr.report import DrillReport, StepRecord

BUDGETS = {"rto_seconds": 900.0, "replication_lag_seconds": 300.0, "failback_seconds": 900.0}


def sample(run_id: str, day: str, rto: float | None) -> DrillReport:
    """A drill that measured `rto` (passed), or None (failed: the primary kept serving)."""
    record = DrillReport(
        flow="dr-drill", flow_run_id=run_id, lab={"name": "lab-a"}, budgets=BUDGETS
    )
    record.started_at, record.ended_at = f"{day}T03:00:00Z", f"{day}T03:04:10Z"
    ok = rto is not None
    record.steps += [
        StepRecord("halt-primary", "completed", f"{day}T03:00:00Z", f"{day}T03:00:12Z", 1),
        StepRecord(
            "measure-failover",
            "completed" if ok else "failed",
            f"{day}T03:00:12Z",
            f"{day}T03:00:53Z",
            1 if ok else 2,
        ),
    ]
    saw = (
        "linux.vm compiled by replica.vm"
        if ok
        else "linux.vm compiled by primary.vm after its halt"
    )
    record.add_check(
        CheckResult(
            "failover",
            ok,
            saw,
            {"agents": {"linux.vm": {"served_by": saw.split()[-1 if ok else -4]}}},
        )
    )
    record.measurements.update(
        rto_seconds=rto,
        replication_lag_seconds=2.5 if ok else None,
        failback_seconds=50.0 if ok else None,
    )
    return record


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/html-report.png").resolve()
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("chromium is not installed")
    earlier = sample("5d0c…-0001", "2026-11-01", None)
    record = sample("9f47…-0002", "2026-12-01", 41.0)
    rows = [
        history.drill_of(earlier, lab="lab-a", flow_run="calm-fox"),
        history.drill_of(record, lab="lab-a", flow_run="bold-owl"),
    ]
    negative: Drill = rows[0]
    approval = report_html.Approval(
        asked="Approve this run to halt primary.vm to prove failover?",
        decision="approve",
        reason="monthly drill window, J. Doe",
        at="2026-12-01T03:00:02+00:00",
    )
    page = report_html.render(
        record,
        chart_svg=history.chart_svg(rows, title="DR drills of lab lab-a"),
        negative=negative,
        negative_record=earlier,
        approvals=[approval],
    )
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drill.html"
        html.write_text(page, encoding="utf-8")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp}/profile",
                "--window-size=1000,2150",
                f"--screenshot={out}",
                html.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    print(out)


if __name__ == "__main__":
    main()
