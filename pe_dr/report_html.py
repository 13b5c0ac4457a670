"""One drill as one self-contained HTML page for auditors (issue 23.6, the renderer only): the
verdict, the figures against their budgets, the trend chart (inline SVG, the history's own),
every check with what it saw, the steps with their durations, the lab and versions, approvals and
the latest negative drill. No external resource; every piece of text escaped (a check's detail
comes from the lab and may hold markup)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from pe_dr.figures import FIGURE_NAMES, MEASUREMENTS
from pe_dr.history import Drill, seconds
from pe_dr.report import DrillReport

STYLE = (
    "body{font:14px sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:.3em .6em;"
    "text-align:left;vertical-align:top;white-space:pre-wrap}"
    ".passed{color:#070}.failed{color:#b00}.other{color:#a60}"
)


@dataclass(frozen=True)
class Approval:
    """One approval the run asked for, as its Resume form recorded it (not its log's words)."""

    asked: str  # the question the form showed
    decision: str | None  # approve | reject; None: never answered
    reason: str = ""
    at: str | None = None  # when the answer was recorded, ISO 8601
    by: str | None = None  # who sent it, when the server recorded a sender


def _verdict_class(status: str) -> str:
    return status if status in ("passed", "failed") else "other"


def _figure(value: float | None) -> str:
    return "not measured" if value is None else f"{seconds(value)} s"


def render(
    record: DrillReport,
    *,
    chart_svg: bytes | None = None,
    negative: Drill | None = None,
    negative_record: DrillReport | None = None,
    approvals: Sequence[Approval] = (),
) -> str:
    """The page; `chart_svg` the trend chart, `negative` the lab's latest negative drill (its
    history row, and its record when it could be read), `approvals` the run's approvals."""
    e = escape
    status = record.status
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>DR drill {e(record.flow_run_id)}: {e(status)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>DR drill <code>{e(record.flow_run_id)}</code></h1>",
        f"<p id='verdict' class='{_verdict_class(status)}'><strong>{e(status.upper())}</strong>"
        f" ({e(record.started_at)} to {e(record.ended_at or '')})</p>",
    ]
    reason = record.cancelled or record.interrupted or record.error
    if reason:
        out.append(f"<p>{e(reason)}</p>")
    out.append("<h2>Figures against budgets</h2><table><tr><th>figure</th><th>measured</th>")
    out.append("<th>budget</th><th>margin</th></tr>")
    for key in MEASUREMENTS:
        value, budget = record.measurements.get(key), record.budgets.get(key)
        margin = "" if value is None or budget is None else f"{seconds(budget - value)} s"
        out.append(
            f"<tr><td>{e(FIGURE_NAMES[key])}</td><td>{e(_figure(value))}</td>"
            f"<td>{'' if budget is None else e(f'{budget:g} s')}</td><td>{e(margin)}</td></tr>"
        )
    out.append("</table>")
    if chart_svg:
        svg = chart_svg.decode("utf-8")
        out.append("<h2>Trend</h2>" + svg[svg.find("<svg") :])  # inline, without its prolog
    out.append("<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>what it saw</th>")
    out.append("</tr>")
    for check in record.checks:
        ok = bool(check.get("passed"))
        saw = str(check.get("detail") or "")
        evidence = check.get("evidence")
        if evidence:
            saw += "\n" + json.dumps(evidence, indent=1, sort_keys=True, default=str)
        out.append(
            f"<tr><td>{e(str(check.get('name')))}</td>"
            f"<td class='{'passed' if ok else 'failed'}'>{'passed' if ok else 'failed'}</td>"
            f"<td>{e(saw)}</td></tr>"
        )
    out.append("</table><h2>Steps</h2><table><tr><th>step</th><th>status</th>")
    out.append("<th>seconds</th><th>attempts</th><th>detail</th></tr>")
    for step in record.steps:
        took = step.seconds()
        out.append(
            f"<tr><td>{e(step.name)}</td><td>{e(step.status)}</td>"
            f"<td>{'' if took is None else e(seconds(took))}</td><td>{step.attempts}</td>"
            f"<td>{e(step.detail)}</td></tr>"
        )
    out.append("</table><h2>Lab and versions</h2><table>")
    lab: dict[str, object] = dict(record.lab)
    lab["pe_version_reported"] = record.pe_version_reported
    for name, said in lab.items():
        out.append(f"<tr><th>{e(str(name))}</th><td>{e(str(said))}</td></tr>")
    out.append("</table>")
    out += _approvals(approvals)
    out += _negative(negative, negative_record)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _approvals(approvals: Sequence[Approval]) -> list[str]:
    e = escape
    if not approvals:
        return [
            "<h2>Approvals</h2><p id='approvals'>none asked (a run from the command line is "
            "approved by its --yes)</p>"
        ]
    out = [
        "<h2>Approvals</h2><table id='approvals'><tr><th>asked</th><th>decision</th>"
        "<th>reason</th><th>answered</th><th>by</th></tr>"
    ]
    for a in approvals:
        decision = a.decision or "unanswered"
        at = f"<time datetime='{e(a.at)}'>{e(a.at)}</time>" if a.at else ""
        by = e(a.by) if a.by else "not recorded (the Resume form had no name field then)"
        out.append(
            f"<tr data-decision='{e(decision)}'><td>{e(a.asked)}</td><td>{e(decision)}</td>"
            f"<td>{e(a.reason)}</td><td>{at}</td><td>{by}</td></tr>"
        )
    out.append("</table>")
    return out


def _negative(row: Drill | None, record: DrillReport | None) -> list[str]:
    e = escape
    out = ["<h2>Latest negative drill</h2>"]
    if row is None:
        return [*out, "<p id='negative'>none on record</p>"]
    out.append(
        f"<p id='negative'><code>{e(row.flow_run_id)}</code> ({e(row.flow_run)}, {e(row.kind)}, "
        f"began {e(row.date)}): <strong class='{_verdict_class(row.verdict)}'>"
        f"{e(row.verdict.upper())}</strong>{' at ' + e(row.failed) if row.failed else ''}</p>"
    )
    failure = record.failure() if record is not None else None
    if failure:
        saw = str(failure.get("detail") or "")
        evidence = failure.get("evidence")
        if evidence:
            saw += "\n" + json.dumps(evidence, indent=1, sort_keys=True, default=str)
        out.append(
            "<table><tr><th>check</th><th>step</th><th>attempts</th><th>what it saw</th></tr>"
            f"<tr><td>{e(str(failure.get('check') or ''))}</td>"
            f"<td>{e(str(failure.get('step') or ''))}</td>"
            f"<td>{e(str(failure.get('attempts') or ''))}</td><td>{e(saw)}</td></tr></table>"
        )
    measured = [(k, v) for k, v in row.figures.items() if v is not None]
    if measured:
        out.append(
            "<p>measured: "
            + e(", ".join(f"{FIGURE_NAMES[k]} {seconds(v)} s" for k, v in measured))
            + "</p>"
        )
    if record is not None and record.next_step():
        out.append(f"<p>next: {e(record.next_step() or '')}</p>")
    return out
