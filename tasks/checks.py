"""The drill's checks as tasks: a failed check fails its task (so a Retry re-runs it)."""

from __future__ import annotations

from pe_dr import checks
from pe_dr.checks import CheckResult
from pe_dr.errors import CheckFailed
from pe_dr.lab import Lab
from pe_dr.spec import LabSpec
from tasks.common import lab_task


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


@lab_task(timeout=600, retries=2, delays=(10, 30))
def check_health(lab: LabSpec, expect_replica: bool = True, step: str = "health") -> CheckResult:
    with Lab(lab) as live:
        return verdict(checks.check_health(live, expect_replica=expect_replica))


@lab_task(timeout=3600, retries=0)
def check_agent_on_both(lab: LabSpec, commit: str | None = None) -> CheckResult:
    with Lab(lab) as live:
        return verdict(checks.check_agent_on_both(live, commit=commit))


@lab_task(timeout=3600, retries=0)
def check_replication(
    lab: LabSpec, marker_id: str, budget_seconds: float, poll_interval: float
) -> CheckResult:
    with Lab(lab) as live:
        return verdict(
            checks.check_replication(
                live,
                marker_id=marker_id,
                budget_seconds=budget_seconds,
                poll_interval=poll_interval,
            )
        )


@lab_task(timeout=600, retries=1, delays=(10,))
def check_failover_ready(lab: LabSpec) -> CheckResult:
    with Lab(lab) as live:
        return verdict(checks.check_failover_ready(live))


@lab_task(timeout=300, retries=0)
def check_primary_down(lab: LabSpec) -> CheckResult:
    with Lab(lab) as live:
        return verdict(checks.check_primary_down(live))


@lab_task(timeout=7200, retries=0)
def measure_failover(
    lab: LabSpec, since: float, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """RTO: from the primary going down to the first agent run served by the replica."""
    with Lab(lab) as live:
        return verdict(
            checks.wait_for_server(
                live,
                name="failover",
                want=lab.replica.name,
                forbid=lab.primary.name,
                since=_monotonic(since),
                budget_seconds=budget_seconds,
                poll_interval=poll_interval,
            )
        )


@lab_task(timeout=7200, retries=0)
def measure_failback(
    lab: LabSpec, since: float, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """Failback time: from the primary answering again to the first agent run it serves."""
    with Lab(lab) as live:
        return verdict(
            checks.wait_for_server(
                live,
                name="failback",
                want=lab.primary.name,
                since=_monotonic(since),
                budget_seconds=budget_seconds,
                poll_interval=poll_interval,
            )
        )


@lab_task(timeout=3600, retries=1, delays=(10,))
def wait_primary_serving(lab: LabSpec, timeout: float, poll_interval: float) -> str:
    with Lab(lab) as live:
        checks.wait_primary_serving(live, timeout=timeout, interval=poll_interval)
    return "serving"


@lab_task(timeout=7200, retries=0)
def check_promotion(
    lab: LabSpec, key_digests: dict[str, str], budget_seconds: float, poll_interval: float
) -> CheckResult:
    with Lab(lab) as live:
        return verdict(
            checks.check_promotion(
                live,
                key_digests=key_digests,
                budget_seconds=budget_seconds,
                poll_interval=poll_interval,
            )
        )


def _monotonic(epoch: float) -> float:
    """An epoch time from another task on the monotonic clock checks measure with."""
    import time

    return time.monotonic() - (time.time() - epoch)
