"""The final health check after failback: a bounded wait for every service to run again."""

from __future__ import annotations

from typing import Any

import pytest

from pe_dr.checks import failover
from pe_dr.checks.result import CheckResult

STARTING = CheckResult("health", False, "primary.vm PuppetDB is starting", {"unhealthy": [1]})
HEALTHY = CheckResult("health", True, "11 of 11 services running", {"unhealthy": []})


def _looks(monkeypatch: pytest.MonkeyPatch, results: list[CheckResult]) -> list[int]:
    seen: list[int] = []

    def check_health(lab: Any, *, expect_replica: bool = True) -> CheckResult:
        assert expect_replica, "the replica belongs to the steady state"
        seen.append(1)
        return results.pop(0) if len(results) > 1 else results[0]

    monkeypatch.setattr(failover, "check_health", check_health)
    return seen


def test_a_service_still_starting_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _looks(monkeypatch, [STARTING, STARTING, HEALTHY])
    result = failover.check_steady_state(object(), budget_seconds=60, poll_interval=0.001)  # type: ignore[arg-type]
    assert result.passed and result.name == "steady_state"
    assert result.detail == HEALTHY.detail
    assert len(seen) == 3 and result.evidence["looks"] == 3


def test_a_service_that_never_runs_fails_when_the_budget_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _looks(monkeypatch, [STARTING])
    result = failover.check_steady_state(object(), budget_seconds=0.05, poll_interval=0.01)  # type: ignore[arg-type]
    assert not result.passed
    assert result.detail.startswith("primary.vm PuppetDB is starting, ")
    assert result.detail.endswith("after failback (budget 0 s)")
    assert len(seen) >= 2 and result.evidence["unhealthy"] == [1]


def test_healthy_at_the_first_look_needs_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _looks(monkeypatch, [HEALTHY])
    result = failover.check_steady_state(object(), budget_seconds=60, poll_interval=30)  # type: ignore[arg-type]
    assert result.passed and len(seen) == 1
