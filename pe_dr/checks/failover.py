"""The failover drill's checks: the primary really down, the RTO (agents served by the
replica), the failback, and the steady state after it. What the replica serves meanwhile, and
the RPO, are judged in pe_dr.checks.rpo."""

from __future__ import annotations

import dataclasses
import time

from pe_dr.checks.agents import from_epoch, wait_for_server
from pe_dr.checks.result import CheckResult
from pe_dr.checks.setup import check_health
from pe_dr.lab.live import Lab
from pe_dr.polling import Pacer


def check_primary_down(lab: Lab, *, probe_timeout: float = 3.0) -> CheckResult:
    """After the halt, the primary must really be gone: vagrant says so and Puppet Server on 8140
    does not answer. Refused, unreachable and hung (accepts TCP, never answers) all count as down:
    agents fail over in each case, only slower for the last two."""
    primary = lab.spec.primary.name
    state = lab.vagrant.state(primary)
    seen = lab.probe_puppetserver(primary, timeout=probe_timeout)
    evidence: dict[str, object] = {"vagrant_state": state, "port_8140": seen}
    if seen == "answering":
        return CheckResult(
            "primary_down",
            False,
            f"{primary} still answers on 8140 after `vagrant halt` (vagrant says {state})",
            evidence,
        )
    if state == "running":
        return CheckResult(
            "primary_down",
            False,
            f"vagrant still says {primary} is running after `vagrant halt` (8140 {seen})",
            evidence,
        )
    return CheckResult("primary_down", True, f"{primary} is {state}; 8140 {seen}", evidence)


def measure_failover(
    lab: Lab, since: float, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """RTO: from the primary going down (`since`, an epoch time) to the first agent run served
    by the replica, less the time the drill's own checks took between the two (that the
    primary is down, what the replica serves): no agent was asked to run meanwhile, and a real
    outage has no such pause, so counting it would overstate the RTO by the drill's own work."""
    down = from_epoch(since)
    paused = max(0.0, time.monotonic() - down)
    result = wait_for_server(
        lab,
        name="failover",
        want=lab.spec.replica.name,
        forbid=lab.spec.primary.name,
        since=down + paused,
        budget_seconds=budget_seconds,
        poll_interval=poll_interval,
    )
    evidence = {**result.evidence, "drill_checks_after_halt_seconds": round(paused, 3)}
    detail = result.detail
    if paused >= 0.05:
        detail += f" (not counted: the drill's {paused:.1f} s of checks after the halt)"
    return dataclasses.replace(result, detail=detail, evidence=evidence)


def measure_failback(
    lab: Lab, since: float, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """Failback time: from the primary answering again (`since`, an epoch time) to the first
    agent run it serves."""
    return wait_for_server(
        lab,
        name="failback",
        want=lab.spec.primary.name,
        since=from_epoch(since),
        budget_seconds=budget_seconds,
        poll_interval=poll_interval,
    )


def check_steady_state(lab: Lab, *, budget_seconds: float, poll_interval: float) -> CheckResult:
    """After failback the lab settles back into health: every service running with no error
    alert, within the budget. A restarted PE server's PuppetDB reports `starting` for a while
    (peadm PR #681 waits out the same window), so one look right after the restart is not a
    verdict; a service still starting or failing when the budget ends is."""
    started = time.monotonic()
    pace = Pacer(poll_interval, started + budget_seconds, what="every PE service to run again")
    looks = 1
    while not (result := check_health(lab, expect_replica=True)).passed and pace.wait():
        looks += 1
    waited = time.monotonic() - started
    evidence = {**result.evidence, "looks": looks, "budget_seconds": budget_seconds}
    if result.passed and waited <= budget_seconds:
        return CheckResult("steady_state", True, result.detail, evidence, seconds=waited)
    return CheckResult(
        "steady_state",
        False,
        f"{result.detail}, {waited:.0f} s after failback (budget {budget_seconds:.0f} s)",
        evidence,
        seconds=waited,
    )
