"""The drill history on plain records: rows from a journal, a Retry counted once, the table, how
the latest drill compares with the last and with its budget, and the chart's series."""

from __future__ import annotations

import base64
import dataclasses
import re
import warnings

import pytest

from pe_dr import history
from pe_dr.checks.result import CheckResult
from pe_dr.history import Drill
from pe_dr.report import DrillReport, StepRecord

BUDGETS = {
    "rto_seconds": 900.0,
    "replication_lag_seconds": 300.0,
    "failback_seconds": 900.0,
    "rpo_seconds": 300.0,
}


def _drill(
    run: str,
    date: str,
    verdict: str = "passed",
    rto: float | None = 40.0,
    lag: float | None = 12.0,
    failback: float | None = 50.0,
    rpo: float | None = 0.5,
    **extra: object,
) -> Drill:
    figures = {
        "rto_seconds": rto,
        "replication_lag_seconds": lag,
        "failback_seconds": failback,
        "rpo_seconds": rpo,
    }
    return Drill(
        lab="lab-a",
        flow_run_id=run,
        flow_run=f"name-{run}",
        date=f"{date}T03:00:00.000Z",
        verdict=verdict,
        figures=figures,
        budgets=dict(extra.pop("budgets", BUDGETS)),  # type: ignore[call-overload]
        **extra,  # type: ignore[arg-type]
    )


def test_a_failed_journal_becomes_a_row_naming_the_check_and_step_and_reads_back() -> None:
    record = DrillReport(flow="dr-drill", flow_run_id="run-1", lab={}, budgets=BUDGETS)
    record.started_at = "2026-11-01T03:00:00.000Z"
    record.steps.append(StepRecord("check-replication", "failed", "t0", "t1", 3, "behind"))
    record.add_check(CheckResult("replication", False, "replica.vm is behind", {"a": 1}))
    record.measurements["replication_lag_seconds"] = 301.5
    drill = history.drill_of(record, lab="lab-a", flow_run="calm-fox")
    assert (drill.verdict, drill.failed_check, drill.failed_step) == (
        "failed",
        "replication",
        "check-replication",
    )
    assert drill.figures == {
        "rto_seconds": None,
        "replication_lag_seconds": 301.5,
        "failback_seconds": None,
        "rpo_seconds": None,
        "replication_latency_seconds": None,
        "puppetdb_sync_seconds": None,
        "promotion_seconds": None,
        "reprotect_seconds": None,
    }
    assert drill.failed == "replication"
    assert Drill.from_row(drill.to_row()) == drill, "the table artifact's row reads back whole"


def test_an_interrupted_journal_names_the_step_it_stopped_in() -> None:
    record = DrillReport(flow="dr-drill", flow_run_id="run-2", lab={})
    record.steps.append(StepRecord("measure-failover", "interrupted", "t0", "t1", 1))
    record.interrupted = "SIGTERM during measure-failover"
    drill = history.drill_of(record, lab="lab-a", flow_run="x")
    assert (drill.verdict, drill.failed_step, drill.failed) == (
        "interrupted",
        "measure-failover",
        "step measure-failover",
    )


def test_rows_of_another_shape_are_skipped_not_guessed_at() -> None:
    good = _drill("r1", "2026-10-01").to_row()
    assert Drill.from_row({**good, "date": "last tuesday"}) is None
    assert Drill.from_row({k: v for k, v in good.items() if k != "flow_run_id"}) is None
    assert Drill.from_row({**good, "rto_seconds": "fast"}) is None
    assert Drill.from_row({**good, "rto_seconds": True}) is None
    assert Drill.from_row(["not", "a", "row"]) is None


def test_a_retry_counts_once_with_its_latest_outcome_and_the_date_it_began() -> None:
    failed = _drill("r2", "2026-11-01", "failed", rto=None, failed_check="failover")
    retried = _drill("r2", "2026-11-02", "passed", rto=44.0)
    written = [
        _drill("r3", "2026-12-01"),
        _drill("r1", "2026-10-01"),
        failed,
        retried,
    ]
    merged = history.latest_per_run(written)
    assert [(d.flow_run_id, d.verdict) for d in merged] == [
        ("r1", "passed"),
        ("r2", "passed"),
        ("r3", "passed"),
    ]
    assert merged[1].date == failed.date, "a retried drill keeps the date it began"
    assert merged[1].figures["rto_seconds"] == 44.0
    # written the other way round, the failed attempt is the latest word
    again = history.latest_per_run([retried, failed])
    assert [d.verdict for d in again] == ["failed"]


def test_the_comparison_says_slower_with_the_margin_inside_the_budget() -> None:
    drills = [_drill("r1", "2026-11-01", rto=38.0), _drill("r2", "2026-12-01", rto=41.0)]
    assert history.comparison(drills)[0] == (
        "RTO 41 s, 3 s slower than the last drill (2026-11-01), 859 s inside its 900 s budget"
    )


def test_the_comparison_says_faster_the_same_and_over_budget() -> None:
    drills = [
        _drill("r1", "2026-11-01", rto=50.0, lag=12.0, failback=45.0),
        _drill(
            "r2",
            "2026-12-01",
            "failed",
            rto=42.5,
            lag=12.0,
            failback=950.0,
            failed_check="failback",
        ),
    ]
    rto, lag, failback, rpo, latency, sync, *_ = history.comparison(drills)
    assert rto == (
        "RTO 42 s, 7.5 s faster than the last drill (2026-11-01), 858 s inside its 900 s budget"
    )
    assert lag == (
        "replication lag 12 s, the same as the last drill (2026-11-01), 288 s inside its 300 s "
        "budget"
    )
    assert failback == (
        "failback 950 s, 905 s slower than the last drill (2026-11-01), 50 s OVER its 900 s budget"
    )
    assert rpo == (
        "RPO 0.50 s, the same as the last drill (2026-11-01), 300 s inside its 300 s budget"
    )
    assert latency == "replication latency not measured (the drill failed at failback)"
    assert sync == "PuppetDB sync age not measured (the drill failed at failback)"


def test_the_first_ever_drill_and_a_figure_not_measured() -> None:
    first = _drill("r1", "2026-12-01", "failed", rto=None, lag=2.25, failed_check="failover")
    rto, lag, *_ = history.comparison([first])
    assert rto == "RTO not measured (the drill failed at failover)"
    assert lag == (
        "replication lag 2.2 s, the first drill on record to measure it, 298 s inside its 300 s "
        "budget"
    )


def test_the_comparison_skips_a_drill_that_did_not_measure_the_figure() -> None:
    drills = [
        _drill("r1", "2026-10-01", rto=0.14),
        _drill("r2", "2026-11-01", "failed", rto=None, failed_check="replication"),
        _drill("r3", "2026-12-01", rto=0.12),
    ]
    assert history.comparison(drills)[0] == (
        "RTO 0.12 s, 0.02 s faster than the last drill that measured it (2026-10-01), "
        "900 s inside its 900 s budget"
    )


def words(line: str) -> str:
    return " ".join(line.split())


def test_the_table_has_one_line_per_drill_and_the_lab_only_when_there_are_several() -> None:
    drills = [
        _drill("aaaaaaaa-1111", "2026-11-01"),
        _drill("bbbbbbbb-2222", "2026-12-01", "failed", rto=None, failed_check="failover"),
    ]
    head, first, second = history.table(drills)
    assert words(head) == (
        "date flow run kind verdict RTO replication lag failback RPO replication latency "
        "PuppetDB sync age promotion reprotect failed"
    )
    assert words(first) == (
        "2026-11-01 03:00 name-aaaaaaaa-1111 aaaaaaaa drill passed 40 s 12 s 50 s 0.50 s — — — —"
    )
    assert words(second).endswith("failed — 12 s 50 s 0.50 s — — — — failover")
    other = dataclasses.replace(drills[0], lab="lab-b", flow_run_id="c")
    assert "lab" in history.table([*drills, other])[0].split()


def test_the_summary_counts_the_verdicts() -> None:
    drills = [
        _drill("r1", "2026-10-01"),
        _drill("r2", "2026-11-01", "failed"),
        _drill("r3", "2026-12-01"),
    ]
    assert history.summary(drills) == "3 drills of lab lab-a since 2026-10-01: 1 failed, 2 passed"
    assert history.summary([]) == "no drills on record"


THREE = [
    _drill("r1", "2026-10-01", rto=38.0),
    _drill("r2", "2026-11-01", "failed", rto=None, lag=310.0, failed_check="replication"),
    _drill("r3", "2026-12-01", rto=41.0),
]


def test_the_trend_embeds_the_chart_and_says_how_this_drill_compares() -> None:
    svg = b"<svg>the chart</svg>"
    markdown = history.trend_markdown(THREE, svg, table_key="dr-drill-history-lab-a")
    (uri,) = re.findall(r"\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert base64.b64decode(uri) == svg, "the artifact embeds the chart itself"
    assert "(2026-12-01, flow run `name-r3`): **PASSED**" in markdown
    assert "- RTO 41 s, 3 s slower than the last drill that measured it (2026-10-01)" in markdown
    assert "3 drills of lab lab-a since 2026-10-01: 1 failed, 2 passed." in markdown
    assert "`dr-drill-history-lab-a`" in markdown


@pytest.mark.slow  # matplotlib's import: seconds on a busy machine
def test_the_chart_draws_the_three_series_beside_their_budgets() -> None:
    drills = THREE
    svg = history.chart_svg(drills, title="DR drills of lab lab-a").decode()
    for key in ("rto_seconds", "replication_lag_seconds", "failback_seconds"):
        assert f'id="series-{key}"' in svg, key
        assert f'id="budget-{key}"' in svg, key
    # one point per measured drill: the RTO line has two vertices (r2 did not measure it)
    rto = re.search(r'<g id="series-rto_seconds">\s*<path d="([^"]+)"', svg)
    assert rto is not None and rto.group(1).count("L") == 1, "two points, one segment"
    assert "DR drills of lab lab-a" in svg and "budget (900 s)" in svg
    assert svg.count("<text") > 10, "labels are text (svg.fonttype none)"


@pytest.mark.slow  # matplotlib's import: seconds on a busy machine
def test_the_chart_of_one_drill_or_of_drills_minutes_apart_draws_without_warnings() -> None:
    one = [_drill("r0", "2026-12-01")]
    apart = [*one, dataclasses.replace(_drill("r1", "2026-12-01"), date="2026-12-01T03:03:20Z")]
    closer = [*one, dataclasses.replace(_drill("r2", "2026-12-01"), date="2026-12-01T03:01:51Z")]
    unmeasured = [_drill("r9", "2026-12-01", "failed", rto=None, lag=None, failback=None)]
    unmeasured[0] = dataclasses.replace(unmeasured[0], budgets={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's complaints about the axis or the legend
        for drills in (one, apart, closer):
            assert b'id="series-rto_seconds"' in history.chart_svg(drills)
        assert b"not measured yet" in history.chart_svg(unmeasured)


def test_a_stopped_drill_was_interrupted_not_failed() -> None:
    stopped = _drill(
        "r2", "2026-12-02", "interrupted", failback=None, failed_step="measure-failback"
    )
    rto, _lag, failback, *_ = history.comparison([_drill("r1", "2026-12-01"), stopped])
    assert rto.startswith("RTO 40 s, the same as the last drill")  # what it measured, it keeps
    assert failback == "failback not measured (the drill was interrupted at step measure-failback)"
    plain = _drill("r3", "2026-12-03", "interrupted", failback=None)
    assert history.comparison([plain])[2] == "failback not measured (the drill was interrupted)"


def _run(run_id: str, *steps: StepRecord, cancelled: str | None = None) -> Drill:
    record = DrillReport(flow="dr-drill", flow_run_id=run_id, lab={}, budgets=BUDGETS)
    record.started_at = "2026-11-01T03:00:00.000Z"
    record.steps.extend(steps)
    record.cancelled = cancelled
    return history.drill_of(record, lab="lab-a", flow_run=run_id)


def test_a_refused_run_and_a_rejected_approval_are_listed_apart_not_as_drills() -> None:
    refused = _run("refused", StepRecord("pre-flight", "failed", "t0", "t1", 1, "no route"))
    rejected = _run(
        "rejected",
        StepRecord("pre-flight", "completed", "t0", "t1", 1),
        StepRecord("check-health", "completed", "t1", "t2", 1),
        cancelled="rejected in the Prefect UI: not today",
    )
    passed = _run(
        "passed",
        StepRecord("pre-flight", "completed", "t0", "t1", 1),
        StepRecord("check-health", "completed", "t1", "t2", 1),
    )
    runs = [refused, rejected, passed]
    assert [d.flow_run_id for d in history.drills_only(runs)] == ["passed"]
    assert [d.flow_run_id for d in history.not_begun(runs)] == ["refused", "rejected"]
    assert history.summary(history.drills_only(runs)).startswith("1 drill of lab lab-a")
    assert Drill.from_row(refused.to_row()) == refused, "began reads back"
    old_row = passed.to_row()
    del old_row["began"]
    assert Drill.from_row(old_row) == passed, "a row from before began is a drill"


def test_the_chart_draws_a_stopped_drill_as_stopped_not_as_a_failure() -> None:
    drills = [
        _drill("r0", "2026-10-01"),
        _drill("r1", "2026-11-01", verdict="interrupted"),
        _drill("r2", "2026-12-01", verdict="cancelled"),
    ]
    svg = history.chart_svg(drills).decode()
    assert "stopped" in svg, "a stop or cancellation has its own marker"
    assert ">failed<" not in svg, "no red cross without a failed drill"


def _record(flow: str, run_id: str, date: str, *chapters: str, **figures: float) -> DrillReport:
    record = DrillReport(flow=flow, flow_run_id=run_id, lab={}, budgets=BUDGETS)
    record.started_at = f"{date}T03:00:00.000Z"
    record.steps.append(StepRecord("pre-flight", "completed", "t0", "t1", 1, chapter=flow))
    for chapter in chapters:
        record.steps.append(StepRecord(f"{chapter}-step", "completed", "t1", "t2", 1, "", chapter))
    record.measurements.update(figures)
    return record


def test_promotions_and_reprotects_are_rows_of_their_own_with_their_own_figures() -> None:
    rows = [
        history.drill_of(
            _record("dr-drill", "d1", "2026-09-01", "failover-drill", rto_seconds=40.0),
            lab="lab-a",
            flow_run="calm-fox",
        ),
        history.drill_of(
            _record(
                "dr-drill",
                "p1",
                "2026-10-01",
                "failover-drill",
                "promotion",
                rto_seconds=41.0,
                promotion_seconds=120.0,
            ),
            lab="lab-a",
            flow_run="bold-owl",
        ),
        history.drill_of(
            _record("reprotect", "r1", "2026-10-02", "reprotect", reprotect_seconds=300.0),
            lab="lab-a",
            flow_run="wise-elk",
        ),
    ]
    assert [d.kind for d in rows] == ["drill", "promotion", "reprotect"]
    assert all(Drill.from_row(d.to_row()) == d for d in rows), "the kind reads back"
    old_row = rows[0].to_row()
    del old_row["kind"]
    assert Drill.from_row(old_row) == rows[0], "a row from before kinds is a drill"
    assert Drill.from_row({**rows[0].to_row(), "kind": "picnic"}) is None, "not guessed at"
    # a promotion alone is one too
    alone = _record("promotion", "p2", "2026-10-03", "promotion", promotion_seconds=1.0)
    assert history.kind_of(alone) == "promotion"

    assert history.summary(rows) == (
        "2 drills of lab lab-a since 2026-09-01: 2 passed; 1 promotion; 1 reprotect"
    )
    lines = [words(line) for line in history.table(rows)]
    assert lines[2].startswith("2026-10-01 03:00 bold-owl p1 promotion passed 41 s")
    assert lines[2].endswith("120 s —")
    assert lines[3].startswith("2026-10-02 03:00 wise-elk r1 reprotect passed — —")
    assert lines[3].endswith("— 300 s")
    # the reprotect's trend speaks of its own figure only, the promotion's of every figure
    assert history.comparison(rows) == [
        "reprotect 300 s, the first reprotect on record to measure it"
    ]
    promoted = history.comparison(rows[:2])
    assert promoted[0].startswith("RTO 41 s, 1 s slower than the last drill (2026-09-01)")
    assert promoted[-2] == "promotion 120 s, the first promotion on record to measure it"
    assert promoted[-1] == "reprotect not measured"
    # a plain drill says nothing of promotion or reprotect
    assert not [line for line in history.comparison(rows[:1]) if "promotion" in line]
    again = dataclasses.replace(
        rows[1],
        flow_run_id="p3",
        date="2026-11-01T03:00:00.000Z",
        figures={**rows[1].figures, "promotion_seconds": 100.0},
    )
    assert "promotion 100 s, 20 s faster than the last promotion (2026-10-01)" in (
        history.comparison([*rows, again])
    )
    markdown = history.trend_markdown(rows, b"<svg/>", table_key="k")
    assert "**This reprotect** (2026-10-02, flow run `wise-elk`): **PASSED**" in markdown


def test_the_chart_marks_a_promotion_across_the_panels() -> None:
    drills = [
        _drill("r0", "2026-10-01"),
        dataclasses.replace(_drill("r1", "2026-11-01"), kind="promotion"),
    ]
    svg = history.chart_svg(drills).decode()
    assert svg.count('id="promotion-') == len(history.MEASUREMENTS), "one line in every panel"
    assert 'id="promotion-' not in history.chart_svg(drills[:1]).decode()
