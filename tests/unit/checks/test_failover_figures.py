"""The RTO counts from the halt to the first agent run the replica serves, without the drill's
own checks in between (no agent was asked to run meanwhile)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pe_dr.checks import agents, failover
from pe_dr.lab.spec import load_spec
from pe_dr.parsing.agent import parse_agent_run

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


class FakeLab(SimpleNamespace):
    def prefetch_hosts(self, names: Any) -> None:
        pass


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> FakeLab:
    spec = load_spec(None)  # the tutorial's lab: one agent, linux.vm
    failed_over = parse_agent_run((GOLDEN / "agent-failover.txt").read_text(), 0)
    monkeypatch.setattr(agents, "agent_run", lambda lab, agent, noop=True: failed_over)
    return FakeLab(spec=spec)


def test_the_drills_checks_after_the_halt_are_not_counted(lab: FakeLab) -> None:
    halted = time.time() - 5.0  # the drill then spent 5 s checking the outage
    result = failover.measure_failover(lab, halted, budget_seconds=900, poll_interval=0.01)  # type: ignore[arg-type]
    assert result.passed, result.detail
    assert result.seconds is not None and result.seconds < 1.0
    assert 5.0 <= result.evidence["drill_checks_after_halt_seconds"] < 6.0  # type: ignore[operator]
    assert "not counted: the drill's 5.0 s of checks after the halt" in result.detail


def test_an_rto_over_budget_still_fails_when_the_checks_are_left_out(lab: FakeLab) -> None:
    result = failover.measure_failover(
        lab, time.time() - 5.0, budget_seconds=1e-9, poll_interval=0.01
    )  # type: ignore[arg-type]
    assert not result.passed and "over its 1e-09 s budget" in result.detail
