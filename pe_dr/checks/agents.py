"""Agent runs as evidence: who served each, polled until every agent is served by the server a
check wants (failover, failback, promotion)."""

from __future__ import annotations

import time

from pe_dr.checks.result import CheckResult, combine, fan_out
from pe_dr.lab.live import Lab
from pe_dr.parsing.agent import AgentRun
from pe_dr.polling import Pacer
from pe_dr.steps.agents import agent_run


def short(lab: Lab, vm: str) -> str:
    return lab.spec.host(vm).short_name


def run_evidence(run: AgentRun) -> dict[str, object]:
    """An agent run as fields: who served it, which code, what it printed as errors."""
    return {
        "exit_code": run.exit_code,
        "served_by": run.served_by,
        "configuration_version": run.configuration_version,
        "commit": run.commit,
        "cached_catalog": run.cached_catalog,
        "errors": list(run.errors),
        "unreachable": [t.to_json() for t in run.troubles],
    }


def agent_names(lab: Lab) -> list[str]:
    """The lab's agents, their SSH handles ready (one `vagrant ssh-config` for all of them)."""
    names = [a.name for a in lab.spec.agents]
    lab.prefetch_hosts(names)
    return names


def served_by(run: AgentRun) -> str:
    if not run.succeeded:
        if run.cached_catalog:
            return "not served (the agent applied its cached catalog)"
        last = run.errors[-1] if run.errors else f"exit code {run.exit_code}"
        if run.configuration_version is None and run.exit_code in (0, 2):
            last = "no catalog was applied"
        return f"failed ({last})"
    text = f"compiled by {run.server} ({run.configuration_version})"
    if run.errors:
        plural = "s" if len(run.errors) > 1 else ""
        text += f", with {len(run.errors)} Error: line{plural} (first: {run.errors[0]})"
    return text


def wait_for_server(
    lab: Lab,
    *,
    name: str,
    want: str,
    since: float,
    budget_seconds: float,
    poll_interval: float,
    forbid: str | None = None,
    noop: bool = True,
) -> CheckResult:
    """Poll agent runs on every agent until each compiles from `want`; time from `since`.

    The evidence keeps every run's fields and, for `forbid` (the server taken down), how the agents
    saw it: refused, hung (the agent waited its http_connect_timeout), unreachable, unavailable.
    """
    short_want = short(lab, want)
    short_forbid = short(lab, forbid) if forbid else None

    def one(agent: str) -> CheckResult:
        deadline = since + budget_seconds
        runs = 0
        seen_down: dict[str, object] | None = None
        pace = Pacer(poll_interval, deadline, what=f"{agent} to be compiled by {want}", since=since)
        while True:
            run = agent_run(lab, agent, noop=noop)
            runs += 1
            last = served_by(run)
            if forbid is not None:
                down = next((t for t in run.troubles if t.server.split(":")[0] == forbid), None)
                seen_down = down.to_json() if down is not None else seen_down
            evidence: dict[str, object] = {
                "agent": agent,
                "runs": runs,
                "last_run": run_evidence(run),
            }
            if forbid is not None:
                evidence["down_server_seen_as"] = seen_down
            if short_forbid is not None and run.served_by == short_forbid:
                return CheckResult(
                    name, False, f"{agent} was still {last} after {forbid} was taken down", evidence
                )
            if run.served_by == short_want:
                took = time.monotonic() - since
                how = f" ({forbid} {seen_down['kind']})" if seen_down else ""
                # a first poll that succeeds late (one slow agent run) is over budget too
                over = f", over its {budget_seconds:g} s budget" if took > budget_seconds else ""
                return CheckResult(
                    name,
                    not over,
                    f"{agent} {last} {took:.1f} s later{how}{over}",
                    evidence,
                    round(took, 3),
                )
            if not pace.wait():
                return CheckResult(
                    name,
                    False,
                    f"{agent} was not compiled by {want} within {budget_seconds:.0f} s; "
                    f"last run {last}",
                    evidence,
                )

    return combine(name, fan_out(agent_names(lab), one))


def from_epoch(epoch: float) -> float:
    """An epoch time from another step on the monotonic clock checks measure with."""
    return time.monotonic() - (time.time() - epoch)
