"""`pe-dr report <flow-run-id> --html FILE`: one drill's record as one self-contained HTML page
for auditors (pe_dr.report_html), with the lab's trend chart and its latest negative drill."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


class ReportUsageError(ValueError):
    """A bad --html path: said in one line, exit 2."""


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="one drill's record as a self-contained HTML page")
    report.add_argument("flow_run", metavar="ID", help="the drill's flow run id")
    report.add_argument("--html", metavar="FILE", required=True, help="write the page there")


def run(args: argparse.Namespace) -> int:
    out = Path(args.html)
    if out.is_dir() or not out.parent.is_dir():
        raise ReportUsageError(f"--html {args.html}: not a file in an existing folder")
    from flows import history as drill_history
    from flows import journal
    from pe_dr import history, report_html

    record = journal.returned(args.flow_run) or journal.read(args.flow_run)
    lab = str(record.lab.get("name") or "")
    drills = history.drills_only(drill_history.read(lab)) if lab else []
    chart = history.chart_svg(drills, title=f"DR drills of lab {lab}") if drills else None
    negative = None
    for drill in reversed(drills):
        if drill.verdict != "passed" and drill.flow_run_id != record.flow_run_id:
            negative = journal.returned(drill.flow_run_id)
            break
    page = report_html.render(record, chart_svg=chart, negative=negative)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    print(f"   report  {out} ({record.status})")
    return 0
