"""`pe-dr report <flow-run-id> --html FILE`: one drill's record as one self-contained HTML page
for auditors (pe_dr.report_html), with the lab's trend chart and its latest negative drill."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

PAUSE_PREFIX = "paused-approval-"  # Prefect's keyset of a Paused state's key (flows.approval)


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
    negative = next(
        (
            d
            for d in reversed(drills)
            if d.verdict != "passed"
            and d.kind != "reprotect"
            and d.flow_run_id != record.flow_run_id
        ),
        None,
    )
    negative_record = None
    if negative is not None:  # its detail when its record can be read; its row says the rest
        with contextlib.suppress(Exception):
            negative_record = journal.returned(negative.flow_run_id) or journal.read(
                negative.flow_run_id
            )
    page = report_html.render(
        record,
        chart_svg=chart,
        negative=negative,
        negative_record=negative_record,
        approvals=approvals(record.flow_run_id),
    )
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    print(f"   report  {out} ({record.status})")
    return 0


def _who(value: dict[str, Any], sender: str | None) -> str | None:
    """The name the approver typed on the Resume form (flows.approval), and the sender the
    server recorded when it recorded one."""
    name = " ".join(str(value.get("approver") or "").split())
    if name and sender:
        return f"{name} (sent by {sender})"
    return name or sender


def approvals(flow_run_id: str) -> list[Any]:
    """The run's approvals as its Resume forms recorded them on the server (flows.approval keys
    each pause `approval-<hex>`; Prefect keeps its inputs under `paused-<key>`: the question as
    `-description`, the answer as `-response`)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from pe_dr.report_html import Approval
    from pe_dr.secrets import scrub

    with get_client(sync_client=True) as client:
        inputs = client.filter_flow_run_input(
            UUID(flow_run_id), key_prefix=PAUSE_PREFIX, limit=1000, exclude_keys=set()
        )
    asked: dict[str, Any] = {}
    answered: dict[str, Any] = {}
    for item in inputs:
        base, _, part = item.key.rpartition("-")
        if part == "description":
            asked[base] = item
        elif part == "response":
            answered[base] = item
    found = []
    for base, question in sorted(asked.items(), key=lambda kv: (kv[1].created, kv[0])):
        text = str(question.decoded_value or "").split("\n", 1)[0].strip("* ")
        answer = answered.get(base)
        value = answer.decoded_value if answer is not None else {}
        found.append(
            Approval(
                asked=scrub(text),
                decision=str(value["decision"]) if value.get("decision") else None,
                reason=scrub(str(value.get("reason") or "").strip()),
                at=answer.created.isoformat() if answer is not None and answer.created else None,
                by=_who(value, answer.sender if answer is not None else None),
            )
        )
    return found
