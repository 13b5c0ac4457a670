"""The drill's checks as tasks: a failed check fails its task (so a Retry re-runs it)."""

from __future__ import annotations

from pe_dr.checks import failover, promotion, replication, reprotect, setup
from pe_dr.checks.result import CheckResult
from pe_dr.errors import CheckFailed
from tasks.common import action_task


class CheckFailedError(CheckFailed):
    """A failed check, carrying its verdict and evidence through Prefect's state."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(f"check {result.name} failed: {result.detail}")
        self.result = result

    def __reduce__(self) -> tuple[type[CheckFailedError], tuple[CheckResult]]:
        return (CheckFailedError, (self.result,))


def verdict(result: CheckResult) -> CheckResult:
    if not result.passed:
        raise CheckFailedError(result)
    return result


check_health = action_task(
    setup.check_health, timeout=600, retries=2, delays=(10, 30), then=verdict
)
check_steady_state = action_task(failover.check_steady_state, timeout=3600, retries=0, then=verdict)
check_agent_on_both = action_task(setup.check_agent_on_both, timeout=3600, retries=0, then=verdict)
check_replication = action_task(
    replication.check_replication, timeout=3600, retries=0, then=verdict
)
check_failover_ready = action_task(
    setup.check_failover_ready, timeout=600, retries=1, delays=(10,), then=verdict
)
check_primary_down = action_task(failover.check_primary_down, timeout=300, retries=0, then=verdict)
measure_failover = action_task(failover.measure_failover, timeout=7200, retries=0, then=verdict)
measure_failback = action_task(failover.measure_failback, timeout=7200, retries=0, then=verdict)
check_promotion = action_task(promotion.check_promotion, timeout=7200, retries=0, then=verdict)
check_reprotected = action_task(reprotect.check_reprotected, timeout=900, retries=0, then=verdict)
