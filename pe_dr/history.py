"""A lab's drills over time: one row per drill (verdict, figures, budgets, what failed), the
history table, how the latest drill compares with the last and with its budget, and the trend
chart of RTO, replication lag and failback (drawn by matplotlib, imported only to draw).

Plain data in, plain data out: where the rows are kept is flows.history's business.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pe_dr.figures import FIGURE_NAMES, MEASUREMENTS
from pe_dr.report import DrillReport


def _budget_column(key: str) -> str:
    return f"{key.removesuffix('_seconds')}_budget_seconds"


@dataclass(frozen=True)
class Drill:
    """One drill as the history keeps it."""

    lab: str
    flow_run_id: str
    flow_run: str  # the name Prefect gave the run (e.g. witty-otter)
    date: str  # when the drill began (its first attempt), ISO 8601 UTC
    verdict: str  # passed | failed | interrupted
    figures: dict[str, float | None] = field(default_factory=dict)
    budgets: dict[str, float | None] = field(default_factory=dict)
    failed_check: str | None = None
    failed_step: str | None = None
    # False: the run never began the drill (refused at pre-flight, approval rejected or not
    # given): listed apart, never counted as a failed drill nor drawn in the trend
    began: bool = True
    # drill | promotion (a drill that went on to promote the replica) | reprotect
    kind: str = "drill"

    def to_row(self) -> dict[str, object]:
        row: dict[str, object] = {
            "date": self.date,
            "flow_run": self.flow_run,
            "verdict": self.verdict,
            "failed_check": self.failed_check,
        }
        row.update({key: self.figures.get(key) for key in MEASUREMENTS})
        row["failed_step"] = self.failed_step
        row.update({_budget_column(key): self.budgets.get(key) for key in MEASUREMENTS})
        row["lab"] = self.lab
        row["flow_run_id"] = self.flow_run_id
        row["began"] = self.began
        row["kind"] = self.kind
        return row

    @classmethod
    def from_row(cls, row: object) -> Drill | None:
        """A row as written by to_row; None for anything else (a row of another shape is
        skipped, not guessed at)."""
        if not isinstance(row, dict):
            return None
        try:
            date, run_id = str(row["date"]), str(row["flow_run_id"])
            _moment(date)
            return cls(
                lab=str(row["lab"]),
                flow_run_id=run_id,
                flow_run=str(row.get("flow_run") or ""),
                date=date,
                verdict=str(row["verdict"]),
                figures={key: _number(row.get(key)) for key in MEASUREMENTS},
                budgets={key: _number(row.get(_budget_column(key))) for key in MEASUREMENTS},
                failed_check=_text(row.get("failed_check")),
                failed_step=_text(row.get("failed_step")),
                began=row.get("began") is not False,  # rows written before it: drills
                kind=_kind(row.get("kind", "drill")),  # rows written before it: drills
            )
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def failed(self) -> str:
        """What failed, in a few words: the check, else the step; '' when it passed."""
        if self.verdict == "passed":
            return ""
        if self.failed_check:
            return self.failed_check
        if self.failed_step:
            return f"step {self.failed_step}"
        return self.verdict


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(value)
    return float(value)


def _kind(value: object) -> str:
    if value not in KINDS:
        raise ValueError(value)
    return str(value)


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def _moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


KINDS = ("drill", "promotion", "reprotect")
# the figures each kind of run measures (a promotion is a drill that went on to promote)
KIND_FIGURES = {
    "drill": tuple(k for k in MEASUREMENTS if k not in ("promotion_seconds", "reprotect_seconds")),
    "promotion": MEASUREMENTS,
    "reprotect": ("reprotect_seconds",),
}


def kind_of(record: DrillReport) -> str:
    """What the run was: a reprotect, a promotion (alone, or a drill that reached its promotion
    chapter), else a drill."""
    if record.flow == "reprotect":
        return "reprotect"
    if record.flow == "promotion" or any(s.chapter == "promotion" for s in record.steps):
        return "promotion"
    return "drill"


# steps before the drill proper: a run that ran nothing else never began the drill
BEFORE_THE_DRILL = frozenset({"pre-flight", "lab-roles"})


def began(record: DrillReport) -> bool:
    """Whether the run began the drill: not called off (approval rejected or not given) and
    past pre-flight (some step other than the ones before the drill ran)."""
    if record.cancelled:
        return False
    return any(s.name not in BEFORE_THE_DRILL for s in record.steps)


def drills_only(drills: Iterable[Drill]) -> list[Drill]:
    """The runs that began the drill: what the history counts and the trend draws."""
    return [d for d in drills if d.began]


def not_begun(drills: Iterable[Drill]) -> list[Drill]:
    """The runs that never began the drill, listed apart."""
    return [d for d in drills if not d.began]


def drill_of(record: DrillReport, *, lab: str, flow_run: str) -> Drill:
    """The history's row of a drill's record."""
    failure = record.failure() or {}
    check, step = failure.get("check"), failure.get("step")
    if record.status == "interrupted":
        stopped = [s.name for s in record.steps if s.status == "interrupted"]
        step = stopped[0] if stopped else None
    return Drill(
        lab=lab,
        flow_run_id=record.flow_run_id,
        flow_run=flow_run,
        date=_moment(record.started_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        verdict=record.status,
        figures={key: record.measurements.get(key) for key in MEASUREMENTS},
        budgets={key: record.budgets.get(key) for key in MEASUREMENTS},
        failed_check=str(check) if check else None,
        failed_step=str(step) if step else None,
        began=began(record),
        kind=kind_of(record),
    )


def latest_per_run(drills: Iterable[Drill]) -> list[Drill]:
    """One row per flow run, oldest drill first: a Retry's outcome replaces the earlier one's
    (`drills` in the order they were written), and the drill keeps the date it began."""
    latest: dict[str, Drill] = {}
    began: dict[str, str] = {}
    for drill in drills:
        latest[drill.flow_run_id] = drill
        first = began.get(drill.flow_run_id)
        if first is None or _moment(drill.date) < _moment(first):
            began[drill.flow_run_id] = drill.date
    merged = [replace(d, date=began[d.flow_run_id]) for d in latest.values()]
    return sorted(merged, key=lambda d: (_moment(d.date), d.flow_run_id))


# --- words -----------------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A figure as a person reads it: 41 s, 2.5 s, 0.14 s."""
    size = abs(value)
    if size >= 10:
        return f"{value:.0f}"
    if size >= 1:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2f}"


def day(iso: str) -> str:
    return _moment(iso).strftime("%Y-%m-%d")


def comparison(drills: Sequence[Drill]) -> list[str]:
    """How the latest row's figures (those its kind measures) compare with the last row that
    measured each, and with its budget: one line per figure ("RTO 41 s, 3 s slower than the
    last drill (2026-11-01), 859 s inside its 900 s budget")."""
    if not drills:
        return []
    latest, earlier = drills[-1], list(drills[:-1])
    lines = []
    for key in KIND_FIGURES.get(latest.kind, MEASUREMENTS):
        name = FIGURE_NAMES[key]
        # promotion and reprotect times compare with the last run that measured them
        noun = {"promotion_seconds": "promotion", "reprotect_seconds": "reprotect"}.get(key)
        value = latest.figures.get(key)
        if value is None:
            how = "was interrupted" if latest.verdict == "interrupted" else "failed"
            at = latest.failed if latest.failed != latest.verdict else ""
            why = f" (the {latest.kind} {how}{' at ' + at if at else ''})" if latest.failed else ""
            lines.append(f"{name} not measured{why}")
            continue
        parts = [f"{name} {seconds(value)} s"]
        before = [d for d in earlier if d.figures.get(key) is not None]
        if not before:
            parts.append(f"the first {noun or 'drill'} on record to measure it")
        else:
            last = before[-1]
            then = last.figures[key]
            assert then is not None
            if noun:
                which = f"the last {noun}"
            elif last is earlier[-1]:
                which = "the last drill"
            else:
                which = "the last drill that measured it"
            change = seconds(abs(value - then))
            if float(change) == 0:
                parts.append(f"the same as {which} ({day(last.date)})")
            else:
                trend = "slower" if value > then else "faster"
                parts.append(f"{change} s {trend} than {which} ({day(last.date)})")
        budget = latest.budgets.get(key)
        if budget is not None:
            margin = budget - value
            if margin >= 0:
                parts.append(f"{seconds(margin)} s inside its {budget:g} s budget")
            else:
                parts.append(f"{seconds(-margin)} s OVER its {budget:g} s budget")
        lines.append(", ".join(parts))
    return lines


def summary(drills: Sequence[Drill]) -> str:
    """'5 drills of lab x since 2026-08-01: 4 passed, 1 failed; 1 promotion; 1 reprotect'
    (a promotion is a drill that went on to promote: counted among the drills too)."""
    if not drills:
        return "no drills on record"
    runs = [d for d in drills if d.kind != "reprotect"]
    counts: dict[str, int] = {}
    for d in runs:
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    labs = sorted({d.lab for d in drills})
    where = f"lab {labs[0]}" if len(labs) == 1 else f"{len(labs)} labs"
    said = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    many = "drill" if len(runs) == 1 else "drills"
    line = f"{len(runs)} {many} of {where} since {day(drills[0].date)}" + (
        f": {said}" if said else ""
    )
    for kind in ("promotion", "reprotect"):
        n = sum(d.kind == kind for d in drills)
        if n:
            line += f"; {n} {kind}{'s' if n > 1 else ''}"
    return line


def table(drills: Sequence[Drill]) -> list[str]:
    """The history as aligned lines, oldest first (the lab's column when there are several)."""
    labs = len({d.lab for d in drills}) > 1
    head = ["date", *(["lab"] if labs else []), "flow run", "kind", "verdict"]
    head += [FIGURE_NAMES[key] for key in MEASUREMENTS] + ["failed"]
    rows = [head]
    for d in drills:
        cells = [_moment(d.date).strftime("%Y-%m-%d %H:%M"), *([d.lab] if labs else [])]
        cells += [f"{d.flow_run} {d.flow_run_id[:8]}".strip(), d.kind, d.verdict]
        for key in MEASUREMENTS:
            value = d.figures.get(key)
            cells.append("—" if value is None else f"{seconds(value)} s")
        cells.append(d.failed)
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# --- the chart -------------------------------------------------------------------------------

SERIES_GID = "series-{}"  # the SVG id of a figure's line (and budget-{} of its budget's)


def chart_svg(drills: Sequence[Drill], *, title: str = "") -> bytes:
    """RTO, replication lag and failback over time, each beside its budget (dashed), drills that
    failed marked with a red cross; one panel per figure. A log scale where the budget is more
    than ten times the largest figure (the line would otherwise lie on the axis)."""
    import matplotlib

    matplotlib.use("Agg")  # never a display
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.figure import Figure

    style: Any = {"svg.fonttype": "none", "svg.hashsalt": "pe-dr-history"}  # text; stable ids
    with matplotlib.rc_context(style):
        figure = Figure(figsize=(8, 7.5))
        figure.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.06, hspace=0.12)
        FigureCanvasSVG(figure)
        axes = figure.subplots(len(MEASUREMENTS), 1, sharex=True)
        dates = [_moment(d.date) for d in drills]
        for ax, key in zip(axes, MEASUREMENTS, strict=True):
            _panel(ax, key, drills, dates)
        if dates:  # a minute either side at least: drills seconds apart get a readable axis
            pad = max((max(dates) - min(dates)) / 20, timedelta(minutes=1))
            axes[-1].set_xlim(min(dates) - pad, max(dates) + pad)
        axes[-1].xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=8))
        same_day = len({t.date() for t in dates}) <= 1
        axes[-1].xaxis.set_major_formatter(DateFormatter("%H:%M:%S" if same_day else "%Y-%m-%d"))
        if same_day and dates:
            axes[-1].set_xlabel(f"{dates[0]:%Y-%m-%d} (UTC)")
        if title:
            figure.suptitle(title)
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _panel(ax: Any, key: str, drills: Sequence[Drill], dates: list[datetime]) -> None:
    values = [d.figures.get(key) for d in drills]
    measured = [(t, v) for t, v in zip(dates, values, strict=True) if v is not None]
    budgets: list[tuple[datetime, float]] = [
        (t, b) for t, d in zip(dates, drills, strict=True) if (b := d.budgets.get(key)) is not None
    ]
    name = FIGURE_NAMES[key]
    if measured:
        ax.plot(*zip(*measured, strict=True), marker="o", label=name, gid=SERIES_GID.format(key))
    failed = [
        (t, v)
        for t, v, d in zip(dates, values, drills, strict=True)
        if v is not None and d.verdict == "failed"
    ]
    if failed:
        ax.plot(*zip(*failed, strict=True), "x", color="tab:red", markersize=9, label="failed")
    stopped = [  # a stop or a cancellation is not a failure: drawn as such, not as a red cross
        (t, v)
        for t, v, d in zip(dates, values, drills, strict=True)
        if v is not None and d.verdict not in ("passed", "failed")
    ]
    if stopped:
        ax.plot(*zip(*stopped, strict=True), "s", color="tab:orange", markersize=7, label="stopped")
    promoted = [t for t, d in zip(dates, drills, strict=True) if d.kind == "promotion"]
    for n, t in enumerate(promoted):  # the roles swapped here: a line across every panel
        label = "promotion" if n == 0 else None
        ax.axvline(t, linestyle=":", color="tab:purple", label=label, gid=f"promotion-{key}-{n}")
    if budgets:
        times, limits = zip(*budgets, strict=True)
        ax.step(
            times,
            limits,
            where="post",
            linestyle="--",
            color="tab:gray",
            label=f"budget ({budgets[-1][1]:g} s)",
            gid=f"budget-{key}",
        )
    largest = max((v for _, v in measured), default=0.0)
    if budgets and largest > 0 and max(b for _, b in budgets) > 10 * largest:
        ax.set_yscale("log")
        ax.set_ylabel(f"{name} (s, log)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{name} (s)")
    if not measured:
        ax.text(0.5, 0.5, "not measured yet", transform=ax.transAxes, ha="center")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize="small")


def data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def trend_markdown(drills: Sequence[Drill], svg: bytes, *, table_key: str) -> str:
    """The trend artifact: the latest drill against the last and its budget, the chart (an SVG
    data URI: an artifact holds text, not files), and where the table is."""
    latest = drills[-1]
    lines = [
        f"# DR drill trend: lab `{latest.lab}`",
        "",
        f"**This {latest.kind}** ({day(latest.date)}, flow run `{latest.flow_run}`): "
        f"**{latest.verdict.upper()}**" + (f" at {latest.failed}" if latest.failed else ""),
        "",
        *(f"- {line}" for line in comparison(drills)),
        "",
        f"![RTO, replication lag and failback of lab {latest.lab} over time]({data_uri(svg)})",
        "",
        f"{summary(drills)}. Every drill: the table artifact `{table_key}`, or "
        f"`pe-dr history --lab {latest.lab}`.",
    ]
    return "\n".join(lines) + "\n"
