"""The drill's oracles: each check returns a verdict with the evidence it saw, and measures time.

A check never passes on missing evidence: no answer is a failure with the reason in `detail`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pe_dr import fanout
from pe_dr.errors import CommandFailed, PeDrError, TransientError
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.parsing.agent import AgentRun, parse_agent_run
from pe_dr.parsing.pe import ServiceStatus, unhealthy
from pe_dr.polling import Pacer
from pe_dr.settings import Settings, env_name, settings
from pe_dr.steps.code_manager import GIT_IDENTITY, _git, push_control_repo
from pe_dr.steps.primary_settings import agent_profile
from pe_dr.steps.promotion import is_primary
from pe_dr.steps.replica import _remote_sha256, agent_server_list, infra_status, replica_enabled

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


def _short(lab: Lab, vm: str) -> str:
    return lab.spec.host(vm).short_name


# --- health --------------------------------------------------------------------------------


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


# --- replication ---------------------------------------------------------------------------


def _deployed_signature(lab: Lab, vm: str) -> str | None:
    path = f"{paths.LIVE_CODE}/{lab.spec.environment}/.r10k-deploy.json"
    out = lab.host(vm).run(["cat", path], root=True, ok_codes=(0, 1))
    if out.exit_code != 0:
        return None
    try:
        return str(json.loads(out.stdout).get("signature") or "") or None
    except ValueError:
        return None


def _live_file(lab: Lab, vm: str, name: str) -> str:
    path = f"{paths.LIVE_CODE}/{lab.spec.environment}/{name}"
    out = lab.host(vm).run(["cat", path], root=True, ok_codes=(0, 1))
    return out.stdout if out.exit_code == 0 else ""


MARKER_PREFIX = "# pe-dr-drill replication marker"


@dataclass(frozen=True)
class Marker:
    """One attempt's change to the control repo: its commit, its line, its number in the run."""

    sha: str
    text: str
    attempt: int
    earlier: tuple[tuple[int, str], ...] = ()  # (attempt, commit) of this run's earlier attempts


def _attempt_of(line: str, prefix: str) -> int | None:
    """The attempt number of a marker line of `prefix` (a legacy line without one is 1)."""
    if not line.startswith(prefix):
        return None
    words = line[len(prefix) :].split()
    if not words:
        return 1
    if len(words) == 2 and words[0] == "attempt" and words[1].isdigit():
        return int(words[1])
    return None


# The replication check's marker lives in one file of the control repo that the drill owns and
# every drill replaces: the Puppetfile stays the admin's, and a year of drills leaves one file.
MARKER_FILE = "pe-dr-drill.marker"


def commit_marker(lab: Lab, marker_id: str) -> Marker:
    """Write a NEW marker for `marker_id` into the drill's marker file of the control repo on the
    primary and commit it: every attempt pushes a change of its own, so a Retry measures a push
    that really happened. Marker lines earlier versions appended to the Puppetfile are removed
    in the same commit (once: then there are none)."""
    primary = lab.host(lab.spec.primary.name)
    prefix = f"{MARKER_PREFIX} {marker_id}"
    earlier: list[tuple[int, str]] = []
    log = primary.run(_git("log", "-n", "200", "--format=%H %s"), root=True).stdout
    for line in log.splitlines():
        sha, _, subject = line.partition(" ")
        n = _attempt_of(subject.removeprefix("pe-dr-drill: "), prefix.lstrip("# "))
        if n:
            earlier.append((n, sha))
    attempt = max((n for n, _ in earlier), default=0) + 1
    text = f"{prefix} attempt {attempt}"
    changed = [MARKER_FILE]
    puppetfile = f"{paths.CONTROL_REPO_DIR}/Puppetfile"
    if primary.exists(puppetfile, root=True):
        content = primary.read(puppetfile, root=True).decode()
        lines = content.splitlines()
        kept = [ln for ln in lines if not ln.startswith(MARKER_PREFIX)]
        if kept != lines:
            primary.put(puppetfile, ("\n".join(kept) + "\n").encode(), mode=0o644,
                        owner="root", group="root")  # fmt: skip
            changed.append("Puppetfile")
    primary.put(
        f"{paths.CONTROL_REPO_DIR}/{MARKER_FILE}",
        f"{text}\n".encode(),
        mode=0o644,
        owner="root",
        group="root",
    )
    primary.run(_git("add", *changed), root=True)
    primary.run(_git(*GIT_IDENTITY, "commit", "-m", f"pe-dr-drill: {text.lstrip('# ')}"), root=True)
    sha = primary.run(_git("rev-parse", "HEAD"), root=True).stdout.strip()
    return Marker(sha, text, attempt, tuple(sorted(earlier)))


def check_replication(
    lab: Lab, *, marker_id: str, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """A commit pushed to the control repo reaches the replica's live code; measures the lag."""
    mark = commit_marker(lab, marker_id)
    sha, marker = mark.sha, mark.text
    replica = lab.spec.replica.name
    pushed = time.monotonic()
    push_control_repo(lab)
    deadline = pushed + budget_seconds
    seen: dict[str, object] = {
        "commit": sha,
        "marker": marker,
        "attempt": mark.attempt,
        "earlier_attempts": [{"attempt": n, "commit": c} for n, c in mark.earlier],
    }
    which = f"commit {sha[:11]}"
    if mark.earlier:
        which += " (attempt {}; earlier: {})".format(
            mark.attempt, ", ".join(f"{c[:11]} (attempt {n})" for n, c in mark.earlier)
        )
    pace = Pacer(
        poll_interval, deadline, what=f"{replica} to deploy commit {sha[:7]}…", since=pushed
    )
    signature: str | None = None
    while True:
        signature = _deployed_signature(lab, replica)
        seen["replica_signature"] = signature
        if signature == sha and marker in _live_file(lab, replica, MARKER_FILE):
            lag = time.monotonic() - pushed
            seen["primary_signature"] = _deployed_signature(lab, lab.spec.primary.name)
            over = f", over its {budget_seconds:g} s budget" if lag > budget_seconds else ""
            return CheckResult(
                "replication",
                not over,
                f"{which} reached {replica} {lag:.1f} s after the push{over}",
                seen,
                seconds=round(lag, 3),
            )
        if not pace.wait():
            break
    seen["primary_signature"] = _deployed_signature(lab, lab.spec.primary.name)
    where = (
        "the primary has it, so file sync to the replica is failing"
        if seen["primary_signature"] == sha
        else "the primary does not have it either, so the webhook or Code Manager is failing"
    )
    has = f"commit {signature[:11]}" if signature else "no deployed code"
    return CheckResult(
        "replication",
        False,
        f"{which} was not on {replica} {budget_seconds:.0f} s after the push "
        f"(replica has {has}); {where}",
        seen,
    )


# --- agent runs ----------------------------------------------------------------------------


def agent_run(
    lab: Lab, agent: str, *, server_list: str | None = None, noop: bool = True
) -> AgentRun:
    argv = ["puppet", "agent", "-t"]
    if noop:
        argv.append("--noop")
    if server_list:
        argv.append(f"--server_list={server_list}")
    try:
        out = lab.host(agent).run(argv, root=True, ok_codes=(0, 1, 2, 4, 6), timeout=1800)
    except CommandFailed as exc:
        return parse_agent_run(exc.stdout + "\n" + exc.stderr, exc.exit_code)
    return parse_agent_run(out.stdout + "\n" + out.stderr, out.exit_code)


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


def _agent_names(lab: Lab) -> list[str]:
    """The lab's agents, their SSH handles ready (one `vagrant ssh-config` for all of them)."""
    names = [a.name for a in lab.spec.agents]
    lab.prefetch_hosts(names)
    return names


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


def _served_by(run: AgentRun) -> str:
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


def check_agent_on_both(lab: Lab, *, commit: str | None) -> CheckResult:
    """Each agent compiles from the replica when told to, and from the primary by default."""
    replica, primary = _short(lab, lab.spec.replica.name), _short(lab, lab.spec.primary.name)

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
            problems.append(f"--server_list={lab.spec.replica.name} was {_served_by(via_replica)}")
        if plain.served_by != primary:
            problems.append(f"the plain run was {_served_by(plain)}")
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
            f"{agent}: {_served_by(via_replica)} and {_served_by(plain)}",
            evidence,
        )

    return combine("agent_on_both_servers", fan_out(_agent_names(lab), one))


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

    return combine("failover_ready", fan_out(_agent_names(lab), one))


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
    short_want = _short(lab, want)
    short_forbid = _short(lab, forbid) if forbid else None

    def one(agent: str) -> CheckResult:
        deadline = since + budget_seconds
        runs = 0
        seen_down: dict[str, object] | None = None
        pace = Pacer(poll_interval, deadline, what=f"{agent} to be compiled by {want}", since=since)
        while True:
            run = agent_run(lab, agent, noop=noop)
            runs += 1
            last = _served_by(run)
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

    return combine(name, fan_out(_agent_names(lab), one))


def measure_failover(
    lab: Lab, since: float, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """RTO: from the primary going down (`since`, an epoch time) to the first agent run served
    by the replica, less the time the drill's own checks took between the two (that the
    primary is down, what the replica serves): no agent was asked to run meanwhile, and a real
    outage has no such pause, so counting it would overstate the RTO by the drill's own work."""
    down = _monotonic(since)
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
        since=_monotonic(since),
        budget_seconds=budget_seconds,
        poll_interval=poll_interval,
    )


def _monotonic(epoch: float) -> float:
    """An epoch time from another step on the monotonic clock checks measure with."""
    return time.monotonic() - (time.time() - epoch)


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


def wait_primary_serving(lab: Lab, *, timeout: float, interval: float) -> None:
    primary = lab.spec.primary.name
    deadline = time.monotonic() + timeout
    pace = Pacer(interval, deadline, what=f"{primary} to serve on 8140")
    while True:
        if lab.accepts_tcp(primary, 8140):
            try:
                with lab.pe(primary, token_file=None) as pe:
                    if pe.simple_status(8140) == "running":
                        return
            except PeDrError:
                pass
        if not pace.wait():
            raise TransientError(f"{primary} did not serve on 8140 within {timeout:.0f} s")


# --- promotion -----------------------------------------------------------------------------


def check_promotion(
    lab: Lab,
    *,
    key_digests: dict[str, str],
    budget_seconds: float,
    poll_interval: float,
    began: float | None = None,
) -> CheckResult:
    """The replica serves as primary: PE runs it as the primary, its ports answer, keys kept,
    agents on it. Measures the promotion: from `began` (an epoch time: the destroy of the old
    primary) to every agent served by the new one."""
    replica = lab.spec.replica.name
    problems = []
    if not is_primary(lab, replica):
        problems.append(f"PE does not run {replica} as its primary (no file sync storage)")
    ports = {port: lab.accepts_tcp(replica, port) for port in (8140, 8143, 8170, 4433, 443)}
    closed = [str(p) for p, ok in ports.items() if not ok]
    if closed:
        problems.append(f"{replica} does not answer on {', '.join(closed)}")
    changed = []
    for path, _owner in paths.SECRET_KEY_FILES:
        digest = _remote_sha256(lab, replica, path)
        if digest is None or not digest.startswith(key_digests.get(path, "-")):
            changed.append(path.rsplit("/", 3)[-3])
    if changed:
        problems.append(
            "secret keys differ from the old primary's (" + ", ".join(changed) + "): "
            "promotion generated new ones, stored credentials are lost"
        )
    converge = wait_for_server(
        lab,
        name="promotion",
        want=replica,
        since=time.monotonic(),
        budget_seconds=budget_seconds,
        poll_interval=poll_interval,
        noop=False,
    )
    if not converge.passed:
        problems.append(converge.detail)
    evidence: dict[str, object] = {"ports": dict(ports), "agents": dict(converge.evidence)}
    took = None if began is None or not converge.passed else round(time.time() - began, 3)
    if problems:
        return CheckResult("promotion", False, "; ".join(problems), evidence, took)
    return CheckResult(
        "promotion",
        True,
        f"{replica} serves as primary, keys kept; {converge.detail}",
        evidence,
        took,
    )


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
