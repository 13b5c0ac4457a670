"""One drill as one self-contained HTML page for auditors (issue 23.6, the renderer only): the
verdict, the figures against their budgets, the trend chart (inline SVG, the history's own),
every check with what it saw, the steps with their durations, the lab and versions, approvals and
the latest negative drill. No external resource; every piece of text escaped (a check's detail
comes from the lab and may hold markup)."""

from __future__ import annotations

import json
from html import escape

from pe_dr.figures import FIGURE_NAMES, MEASUREMENTS
from pe_dr.history import seconds
from pe_dr.report import DrillReport

STYLE = (
    "body{font:14px sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:.3em .6em;"
    "text-align:left;vertical-align:top;white-space:pre-wrap}"
    ".passed{color:#070}.failed{color:#b00}.other{color:#a60}"
)


def _verdict_class(status: str) -> str:
    return status if status in ("passed", "failed") else "other"


def _figure(value: float | None) -> str:
    return "not measured" if value is None else f"{seconds(value)} s"


def render(
    record: DrillReport,
    *,
    chart_svg: bytes | None = None,
    negative: DrillReport | None = None,
) -> str:
    """The page; `chart_svg` the trend chart, `negative` the latest negative drill's record."""
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
    out.append("</table><h2>Approvals</h2><ul>")
    approvals = [n for n in record.notes if "approv" in n or "reject" in n]
    out += [f"<li>{e(n)}</li>" for n in approvals] or ["<li>none asked</li>"]
    out.append("</ul><h2>Latest negative drill</h2>")
    if negative is None:
        out.append("<p>none on record</p>")
    else:
        out.append(
            f"<p><code>{e(negative.flow_run_id)}</code> ({e(negative.started_at)}): "
            f"<strong>{e(negative.status.upper())}</strong></p>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
