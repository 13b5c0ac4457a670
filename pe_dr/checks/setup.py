"""The set-up's checks: PE healthy on both servers, agents served by either, and ready to fail
over (each agent's server_list and the classification it comes from name the replica)."""

from __future__ import annotations

from pe_dr.checks.agents import agent_names, run_evidence, served_by, short
from pe_dr.checks.result import CheckResult, combine, fan_out
from pe_dr.errors import PeDrError
from pe_dr.lab.live import Lab
from pe_dr.parsing.pe import ServiceStatus, unhealthy
from pe_dr.steps.agents import agent_run
from pe_dr.steps.primary_settings import agent_profile
from pe_dr.steps.replica import agent_server_list, infra_status


def _service_evidence(s: ServiceStatus) -> dict[str, object]:
    return {
        "server": s.server,
        "service": s.display_name or s.service,
        "state": s.state,
        "alerts": [{"severity": a.severity, "message": a.message} for a in s.alerts],
    }


def check_health(lab: Lab, *, expect_replica: bool = True) -> CheckResult:
    """Every PE service on the primary (and the replica) reports `running` with no error alert.

    PE keeps a service whose database replication broke `running` and reports it only as an
    error-severity alert ("Database replication for Classifier is inactive": peadm
    spec/fixtures/infrastatus.json), so alerts count as much as states; warnings are evidence.
    """
    try:
        services = infra_status(lab)
    except PeDrError as exc:
        return CheckResult("health", False, f"could not read PE status: {exc}")
    bad = unhealthy(services)
    servers = sorted({s.server for s in services})
    warnings = [
        f"{s.server} {s.display_name or s.service}: {a.message}"
        for s in services
        for a in s.alerts
        if a.severity != "error"
    ]
    evidence: dict[str, object] = {
        "services": len(services),
        "servers": servers,
        "unhealthy": [_service_evidence(s) for s in bad],
        "warnings": warnings,
    }
    if not services:
        return CheckResult("health", False, "PE status listed no services", evidence)
    if expect_replica and lab.spec.replica.name not in servers:
        return CheckResult(
            "health",
            False,
            f"{lab.spec.replica.name} is not among PE's servers: {servers}",
            evidence,
        )
    if bad:
        first = bad[0]
        name = first.display_name or first.service
        if first.state != "running":
            what = f"{first.server} {name} is {first.state}"
        else:
            what = f"{first.server} {name} reports the error alert {first.errors[0].message!r}"
        more = f" (and {len(bad) - 1} more services)" if len(bad) > 1 else ""
        return CheckResult("health", False, f"{what}{more}", evidence)
    note = f"; {len(warnings)} warnings" if warnings else ""
    return CheckResult(
        "health",
        True,
        f"{len(services)} of {len(services)} services running on {servers}, no error alert{note}",
        evidence,
    )


def check_agent_on_both(lab: Lab, *, commit: str | None) -> CheckResult:
    """Each agent compiles from the replica when told to, and from the primary by default."""
    replica, primary = short(lab, lab.spec.replica.name), short(lab, lab.spec.primary.name)

    def one(agent: str) -> CheckResult:
        via_replica = agent_run(lab, agent, server_list=lab.spec.replica.name)
        plain = agent_run(lab, agent)
        evidence: dict[str, object] = {
            "agent": agent,
            "replica_run": run_evidence(via_replica),
            "plain_run": run_evidence(plain),
        }
        problems = []
        if via_replica.served_by != replica:
            problems.append(f"--server_list={lab.spec.replica.name} was {served_by(via_replica)}")
        if plain.served_by != primary:
            problems.append(f"the plain run was {served_by(plain)}")
        if commit and not problems:
            stale = [
                r.configuration_version
                for r in (via_replica, plain)
                if r.commit and not commit.startswith(r.commit)
            ]
            if stale:
                problems.append(f"compiled stale code {stale[0]} (expected commit {commit[:11]})")
        if problems:
            return CheckResult(
                "agent_on_both_servers", False, f"{agent}: " + "; ".join(problems), evidence
            )
        return CheckResult(
            "agent_on_both_servers",
            True,
            f"{agent}: {served_by(via_replica)} and {served_by(plain)}",
            evidence,
        )

    return combine("agent_on_both_servers", fan_out(agent_names(lab), one))


AGENT_GROUP = "PE Agent"  # the node group agents take their server_list from


def check_agents_server_list(lab: Lab) -> CheckResult:
    """Each agent's own server_list (`puppet config print`) names the replica, or failover
    cannot happen."""
    replica = lab.spec.replica.name

    def one(agent: str) -> CheckResult:
        servers = agent_server_list(lab, agent)
        ok = any(s.split(":")[0] == replica for s in servers)
        detail = f"{agent} server_list is {','.join(servers) or 'empty'}"
        if not ok:
            detail += f": {replica} is missing, so agents cannot fail over"
        return CheckResult("failover_ready", ok, detail, {"agent": agent, "server_list": servers})

    return combine("failover_ready", fan_out(agent_names(lab), one))


def check_failover_ready(lab: Lab) -> CheckResult:
    """Each agent's server_list names the replica, and so does the classification they take it
    from (the PE Agent group's puppet_enterprise::profile::agent, PDF-2021.7.1 p.271-277), or the
    agents drop the replica at their next Puppet run."""
    replica = lab.spec.replica.name
    agents = check_agents_server_list(lab)
    if not agents.passed:
        return agents
    classified = agent_profile(lab, AGENT_GROUP).get("server_list")
    servers = [str(s) for s in classified] if isinstance(classified, list) else []
    evidence = {**agents.evidence, "classified_server_list": servers}
    if not any(s.split(":")[0] == replica for s in servers):
        return CheckResult(
            "failover_ready",
            False,
            f"{replica} is missing from {AGENT_GROUP}'s classified server_list "
            f"({','.join(servers) or 'empty'}): agents drop it at their next Puppet run",
            evidence,
        )
    return CheckResult(
        "failover_ready", True, f"{agents.detail}; {AGENT_GROUP} classifies it too", evidence
    )
