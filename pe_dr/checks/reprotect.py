"""The reprotect's check: the lab is a protected pair again."""

from __future__ import annotations

import time

from pe_dr.checks.result import CheckResult
from pe_dr.checks.setup import check_agents_server_list, check_health
from pe_dr.lab.live import Lab
from pe_dr.steps.replica import replica_enabled


def check_reprotected(lab: Lab, *, began: float, budget_seconds: float) -> CheckResult:
    """After a promotion, the lab is a protected pair again: PE lists the rebuilt VM as its
    enabled replica, every service of both runs with no error alert, and each agent's
    server_list names it. Measures the reprotect: from `began` (an epoch time) to now."""
    replica = lab.spec.replica.name
    took = round(time.time() - began, 3)
    problems = []
    if not replica_enabled(lab):
        problems.append(f"PE does not list {replica} among its enabled replicas")
    health = check_health(lab, expect_replica=True)
    if not health.passed:
        problems.append(health.detail)
    ready = check_agents_server_list(lab)
    if not ready.passed:
        problems.append(ready.detail)
    if not problems and took > budget_seconds:
        problems.append(f"the reprotect took {took:.0f} s, over its {budget_seconds:g} s budget")
    evidence: dict[str, object] = {
        "primary": lab.spec.primary.name,
        "replica": replica,
        "health": health.detail,
        "agents": ready.evidence.get("agents"),
    }
    if problems:
        return CheckResult("reprotect", False, "; ".join(problems), evidence, took)
    return CheckResult(
        "reprotect",
        True,
        f"{replica} is the replica of {lab.spec.primary.name} again, {took:.0f} s after the "
        "reprotect began; agents fail over to it",
        evidence,
        took,
    )
