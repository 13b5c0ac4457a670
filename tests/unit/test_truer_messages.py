"""Messages that tell the truth (issue 24.4): the line a stop begins with says what the stop does
in the part of the drill under way (during a promotion that destroyed the old primary it once
promised to start "a primary the drill halted" again); a run waiting for approval says so."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from flows import common
from pe_dr import interrupts
from pe_dr_cli import stopping

STOP = interrupts.Stop(signal.SIGTERM, 0.0, "2026-12-06T00:00:00Z")


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    interrupts.reset()
    yield
    interrupts.reset()


def test_a_stop_in_the_promotion_does_not_promise_the_old_primary_back() -> None:
    interrupts.set_stop_effect(common.stop_effect_of("promotion"))
    line = stopping.announcement(STOP)
    assert "started again" not in line, line
    assert "a primary it destroyed is not brought back" in line
    assert "a Retry resumes the promotion" in line


def test_a_stop_in_the_failover_drill_starts_the_halted_primary_again() -> None:
    interrupts.set_stop_effect(common.stop_effect_of("failover-drill"))
    assert "a primary the drill halted is started again" in stopping.announcement(STOP)


def test_a_stop_in_reprotect_keeps_the_promoted_primary() -> None:
    interrupts.set_stop_effect(common.stop_effect_of("reprotect"))
    line = stopping.announcement(STOP)
    assert "started again" not in line and "a Retry resumes the reprotect" in line


def test_elsewhere_a_stop_only_stops_and_writes_the_journal() -> None:
    for chapter in ("lab-setup", "replication-check", "dr-drill"):
        interrupts.set_stop_effect(common.stop_effect_of(chapter))
        line = stopping.announcement(STOP)
        assert line.startswith("pe-dr: SIGTERM: stopping within 25 s: the step under way")
        assert "primary" not in line, line


def test_a_run_waiting_for_approval_says_so_in_its_progress() -> None:
    """A first run waiting for approval read "0 steps …, now: <the step before>" (24.4)."""
    from tasks.progress import Tracker

    tracker = Tracker("dr-drill", planned=None)  # a first run: no step count to go by
    tracker.running("replication-check")
    tracker.finished()
    tracker.waiting("approval in the Prefect UI to halt primary.vm")
    assert tracker._pending is not None
    assert tracker._pending[1] == (
        "dr-drill: 1 steps finished; waiting for approval in the Prefect UI to halt primary.vm"
    )
    tracker.running("halt-primary")  # approved: the next step is what it does now
    assert tracker._pending[1] == "dr-drill: 1 steps finished; now: halt-primary"


def test_the_report_shows_no_python_repr_and_no_check_text_in_a_table_cell() -> None:
    from pe_dr.report import DrillReport

    report = DrillReport(flow="dr-drill", flow_run_id="r1", lab={"name": "lab"})
    long = "agent01.vm was compiled by replica.vm " + "x" * 300
    report.checks = [
        {"name": "failover", "passed": False, "detail": long, "evidence": {}},
        {"name": "servers", "passed": True, "detail": ["primary.vm:8140", "replica.vm:8140"]},
    ]
    text = report.to_markdown()
    assert f"- **failover** **FAIL**: {long}" in text  # whole, in a list item that wraps
    assert "- **servers** pass: primary.vm:8140, replica.vm:8140" in text
    assert "['" not in text and "{'" not in text
