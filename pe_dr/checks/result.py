"""A check's verdict, and one verdict over many agents checked at once.

A check never passes on missing evidence: no answer is a failure with the reason in `detail`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pe_dr import fanout
from pe_dr.settings import Settings, env_name, settings

# At most this many agents are checked at once (one thread and one SSH connection each);
# PE_DR_MAX_PARALLEL_AGENTS overrides it.
MAX_PARALLEL_AGENTS = Settings.model_fields["max_parallel_agents"].default
MAX_PARALLEL_ENV = env_name("max_parallel_agents")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    evidence: dict[str, object] = field(default_factory=dict)
    seconds: float | None = None
    # further figures the check measured, by name (replica_serves: replication latency, ...)
    figures: dict[str, float | None] = field(default_factory=dict)


def max_parallel_agents() -> int:
    """The bound on agents checked at once: $PE_DR_MAX_PARALLEL_AGENTS, else the default."""
    return settings().max_parallel_agents


def fan_out(
    agents: list[str], work: Callable[[str], CheckResult], *, limit: int | None = None
) -> list[CheckResult]:
    """Run `work` for each agent concurrently (at most `limit` at once), keeping their order; a
    stop signal leaves the workers behind (pe_dr.fanout) rather than waiting for them."""
    if len(agents) == 1:
        return [work(agents[0])]
    bound = limit if limit is not None else max_parallel_agents()
    return fanout.each(agents, work, limit=bound)


def combine(name: str, results: list[CheckResult]) -> CheckResult:
    """One verdict over per-agent results; each agent's evidence is kept under `agents`."""
    failed = [r for r in results if not r.passed]
    seconds = [r.seconds for r in results if r.seconds is not None]
    agents: dict[str, object] = {
        str(r.evidence.get("agent", i)): {**r.evidence, "passed": r.passed, "detail": r.detail}
        for i, r in enumerate(results)
    }
    evidence: dict[str, object] = {"agents": agents}
    # a figure is known when every agent measured one, passed or over its budget
    worst = max(seconds) if seconds and len(seconds) == len(results) else None
    if failed:
        more = f" (and {len(failed) - 1} more agents)" if len(failed) > 1 else ""
        return CheckResult(name, False, failed[0].detail + more, evidence, worst)
    if len(results) == 1:
        return CheckResult(name, True, results[0].detail, evidence, worst)
    return CheckResult(
        name, True, f"{len(results)} agents passed; slowest {worst or 0:.1f} s", evidence, worst
    )
