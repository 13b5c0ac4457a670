"""The auditors' HTML page of one drill: self-contained, every text escaped."""

from __future__ import annotations

import re

from pe_dr import report_html
from pe_dr.checks.result import CheckResult
from pe_dr.history import Drill
from pe_dr.report import DrillReport, StepRecord


def _record() -> DrillReport:
    record = DrillReport(
        flow="dr-drill", flow_run_id="run-1", lab={"name": "lab-a"}, budgets={"rto_seconds": 900.0}
    )
    record.steps.append(
        StepRecord("measure-failover", "failed", "2026-11-01T03:00:00Z", "2026-11-01T03:00:41Z", 2)
    )
    record.add_check(CheckResult("failover", False, "<script>alert(1)</script> saw", {"x": "<b>"}))
    record.measurements["rto_seconds"] = 41.0
    record.notes.append("approved in the Prefect UI to halt primary.vm: monthly drill")
    return record


APPROVED = report_html.Approval(
    asked="Approve this run to halt primary.vm?",
    decision="approve",
    reason="monthly <drill>",
    at="2026-11-01T03:00:02+00:00",
    by="ops@example.com",
)


def test_the_page_has_the_verdict_figures_steps_and_approval() -> None:
    page = report_html.render(_record(), approvals=[APPROVED])
    assert "<p id='verdict' class='failed'><strong>FAILED</strong>" in page
    assert "<td>RTO</td><td>41 s</td><td>900 s</td><td>859 s</td>" in page
    assert "<td>measure-failover</td><td>failed</td><td>41</td><td>2</td>" in page
    assert (
        "<tr data-decision='approve'><td>Approve this run to halt primary.vm?</td><td>approve</td>"
        "<td>monthly &lt;drill&gt;</td><td><time datetime='2026-11-01T03:00:02+00:00'>"
        "2026-11-01T03:00:02+00:00</time></td><td>ops@example.com</td></tr>"
    ) in page, "who and when from the recorded answer"
    assert "<p id='negative'>none on record</p>" in page


def test_approvals_come_from_the_recorded_answers_not_from_the_notes() -> None:
    record = _record()  # its notes say it was approved: the page does not take their word
    page = report_html.render(record)
    assert "none asked" in page and "data-decision" not in page
    unanswered = report_html.Approval(asked="Approve this run to halt primary.vm?", decision=None)
    page = report_html.render(record, approvals=[unanswered])
    assert "<tr data-decision='unanswered'>" in page
    assert "not recorded (the Resume form had no name field then)" in page


def test_the_latest_negative_drill_shows_what_failed_and_what_it_saw() -> None:
    earlier = _record()
    earlier.flow_run_id = "run-0"
    row = Drill(
        lab="lab-a",
        flow_run_id="run-0",
        flow_run="calm-fox",
        date="2026-10-01T03:00:00Z",
        verdict="failed",
        figures={"rto_seconds": 41.0, "failback_seconds": None},
        failed_check="failover",
        failed_step="measure-failover",
    )
    page = report_html.render(_record(), negative=row, negative_record=earlier)
    assert (
        "<p id='negative'><code>run-0</code> (calm-fox, drill, began 2026-10-01T03:00:00Z): "
        "<strong class='failed'>FAILED</strong> at failover</p>"
    ) in page
    assert "<td>failover</td><td>measure-failover</td><td>2</td><td>&lt;script&gt;" in page
    assert "<p>measured: RTO 41 s</p>" in page
    assert "next: clear the cause above, then Retry this run: pe-dr retry run-0" in page
    # its record unreadable: the history's row still says what failed
    alone = report_html.render(_record(), negative=row)
    assert "<strong class='failed'>FAILED</strong> at failover</p>" in alone


def test_text_from_the_lab_is_escaped_and_nothing_is_loaded_from_outside() -> None:
    page = report_html.render(_record(), chart_svg=b"<?xml version='1.0'?>\n<svg></svg>")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; saw" in page
    assert "&lt;b&gt;" in page
    assert "<h2>Trend</h2><svg></svg>" in page, "the chart inline, without its XML prolog"
    assert not re.search(r"(src|href)=|url\(|@import", page)


def test_report_html_to_a_missing_folder_is_refused_in_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pe_dr_cli.main import EXIT_USAGE, main

    for where in (tmp_path / "no" / "x.html", tmp_path):
        assert main(["report", "some-run", "--html", str(where)]) == EXIT_USAGE
        said = capsys.readouterr().err.splitlines()
        assert said == [f"pe-dr: --html {where}: not a file in an existing folder"]


def test_the_page_renders_in_headless_chromium(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/install-test-packages.sh installs it)")
    page = tmp_path / "drill.html"
    page.write_text(report_html.render(_record(), chart_svg=b"<svg></svg>"), encoding="utf-8")
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/p"]
    dom = subprocess.run(
        [*argv, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'id="verdict" class="failed"><strong>FAILED</strong>' in dom
    assert "<script" not in dom, "the check's markup stayed text"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*argv, "--window-size=800,1200", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    dark = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5, f"the screenshot is blank or black ({dark:.1%} dark pixels)"
