"""The product's agent checks, unchanged, against real Puppet: Debian 12's puppetserver as
primary.vm and replica.vm (one CA), a real agent as linux.vm, real faults.

What the checks run is what they run on a real lab: `pe_dr.lab.live.Lab(spec).host("linux.vm")`
takes its SSH settings from `vagrant ssh-config linux.vm`, connects with fabric and runs
`sudo -n -i puppet agent -t --noop [...]`; the agent fails over along its own `server_list`; each
catalog's configuration version comes from the project's control-repo scripts on the server that
compiled it.

What differs from a real lab (realpuppet.py has the details):

* no VMs: each "VM" is a private mount and UTS namespace on a loopback address (127.0.50.x), with
  its own hostname and a private copy of /etc (the lab's /etc/hosts); `vagrant` is a test
  stand-in that answers `ssh-config <vm>` in vagrant's format; each VM runs a real OpenSSH
  server in its namespace, with a login user that exists only there;
* open-source Puppet 7 from Debian (puppet-agent 7.23, puppetserver 7.9.5), not PE's builds: the
  servers run as root, with PE's code layout where the scripts look (`.r10k-deploy.json`,
  `/opt/puppetlabs/puppet/bin/ruby`) but not PE's paths elsewhere; the replica is a second
  puppetserver with the CA service disabled, not a PE replica (no file sync: the tests deploy code
  to each server themselves);
* the replica's and the agent's certificates were signed offline (`puppetserver ca generate
  --ca-client`), so they carry the pp_cli_auth extension;
* "the primary is down" is its puppetserver process stopped, frozen (SIGSTOP) or replaced by a
  listener, not a halted VM (`vagrant halt`); the agent's http_connect_timeout (the hung cases)
  and http_read_timeout (the silent one) are 3 s, not 120 s and 10 min, to keep the tier short;
* in the gVisor sandbox these machines run in, Facter prints 18 `Error: Facter: Permission denied
  @ rb_sysopen - /proc/1/environ` lines in every run (findings §2); a real VM does not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from realpuppet import FIGURES, RealPuppetLab, capture_golden, system_snapshot, tier_marks

from pe_dr.checks.agents import wait_for_server
from pe_dr.checks.result import CheckResult
from pe_dr.checks.setup import check_agent_on_both, check_agents_server_list
from pe_dr.lab.live import Lab

pytestmark = tier_marks()

CONNECT_TIMEOUT = 3.0  # the agent's http_connect_timeout in the hung cases
BUDGET = 120.0  # seconds: the RTO and failback budgets given to the checks
POLL = 1.0

EXPECTED_SERVERS = ["primary.vm:8140", "replica.vm:8140"]


def _agent(result_evidence: dict[str, object]) -> dict[str, object]:
    agents = result_evidence["agents"]
    assert isinstance(agents, dict)
    evidence = agents["linux.vm"]
    assert isinstance(evidence, dict)
    return evidence


def _run(evidence: dict[str, object], key: str) -> dict[str, object]:
    run = evidence[key]
    assert isinstance(run, dict)
    return run


def _failover(lab: Lab, since: float, budget: float = BUDGET) -> CheckResult:
    return wait_for_server(
        lab,
        name="failover",
        want="replica.vm",
        forbid="primary.vm",
        since=since,
        budget_seconds=budget,
        poll_interval=POLL,
    )


def _failback(lab: Lab, since: float) -> CheckResult:
    return wait_for_server(
        lab,
        name="failback",
        want="primary.vm",
        since=since,
        budget_seconds=BUDGET,
        poll_interval=POLL,
    )


def _c11(sha: str) -> str:
    return sha[:11]


# --- both servers up ---------------------------------------------------------------------------


def test_the_agent_compiles_on_both_servers(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """check_agent_on_both: `--server_list=replica.vm` is compiled by the replica, a plain run by
    the primary, both with the deployed commit, in configuration versions that the project's own
    config_version scripts produced on each server."""
    real_puppet.arrange()
    current = real_puppet.commits["current"]
    result = check_agent_on_both(lab, commit=current)
    assert result.passed, result.detail
    agent = _agent(result.evidence)
    via_replica, plain = _run(agent, "replica_run"), _run(agent, "plain_run")
    assert via_replica["configuration_version"] == f"replica-production-{_c11(current)}"
    assert plain["configuration_version"] == f"primary-production-{_c11(current)}"
    assert (via_replica["served_by"], plain["served_by"]) == ("replica", "primary")
    assert via_replica["exit_code"] == plain["exit_code"] == 0
    assert plain["unreachable"] == [] and via_replica["unreachable"] == []
    assert result.detail.startswith(
        f"linux.vm: compiled by replica (replica-production-{_c11(current)})"
    )
    capture_golden(lab, "both-up", "both servers up: the plain run is compiled by the primary")
    capture_golden(
        lab,
        "server-list-replica",
        "both servers up, the run told --server_list=replica.vm",
        server_list="replica.vm",
    )


def test_failover_ready_reads_the_agents_real_server_list(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    """failover_ready's agent side reads `puppet config print server_list --section agent` from
    the real agent: it passes with the replica in the list and fails, naming the gap, without it
    (its other side, PE's classification, has no real PE here: labsim's tiers test it)."""
    real_puppet.arrange()
    ready = check_agents_server_list(lab)
    assert ready.passed, ready.detail
    assert _agent(ready.evidence)["server_list"] == EXPECTED_SERVERS
    real_puppet.arrange(server_list="primary.vm:8140")
    not_ready = check_agents_server_list(lab)
    assert not not_ready.passed
    assert _agent(not_ready.evidence)["server_list"] == ["primary.vm:8140"]
    assert "replica.vm is missing" in not_ready.detail, not_ready.detail


def test_a_failing_custom_fact_still_counts_as_served(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """A commit ships a module whose custom fact raises (pluginsync brings it to the agent): Facter
    prints an Error: line, the run exits 0 with the catalog applied, so both runs count as
    served, with the error kept as evidence."""
    real_puppet.arrange(primary_code="failing-fact", replica_code="failing-fact")
    commit = real_puppet.commits["failing-fact"]
    result = check_agent_on_both(lab, commit=commit)
    assert result.passed, result.detail
    plain = _run(_agent(result.evidence), "plain_run")
    assert plain["exit_code"] == 0
    assert plain["served_by"] == "primary"
    assert plain["commit"] == _c11(commit)
    errors = plain["errors"]
    assert isinstance(errors, list)
    fact_errors = [e for e in errors if "pedr_failing_fact" in e]
    assert fact_errors, errors
    assert "this custom fact fails on purpose" in fact_errors[0]
    capture_golden(lab, "failing-fact", "a custom fact that raises, shipped by pluginsync")


def test_a_replica_one_commit_behind_fails_with_stale_code(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    """The replica serves the previous commit (its .r10k-deploy.json and files): the replica's run
    succeeds, but the check fails it as stale code, naming both commits."""
    real_puppet.arrange(replica_code="previous")
    current, previous = real_puppet.commits["current"], real_puppet.commits["previous"]
    result = check_agent_on_both(lab, commit=current)
    assert not result.passed
    assert f"compiled stale code replica-production-{_c11(previous)}" in result.detail
    assert f"expected commit {_c11(current)}" in result.detail
    via_replica = _run(_agent(result.evidence), "replica_run")
    assert via_replica["served_by"] == "replica" and via_replica["commit"] == _c11(previous)
    capture_golden(
        lab,
        "stale-replica",
        "the replica one commit behind (it has the skeleton without the replication marker)",
        server_list="replica.vm",
    )


def test_the_failover_check_fails_while_the_primary_still_serves(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    """The negative control: the primary was "taken down" but still serves (a halt that did not
    happen). The agent's plain run is compiled by the primary, so the failover check fails at
    once, naming it."""
    real_puppet.arrange()
    result = _failover(lab, time.monotonic())
    assert not result.passed
    assert result.detail.startswith("linux.vm was still compiled by primary"), result.detail
    assert "after primary.vm was taken down" in result.detail
    evidence = _agent(result.evidence)
    assert evidence["runs"] == 1
    assert _run(evidence, "last_run")["served_by"] == "primary"


# --- the primary hung, then back -------------------------------------------------------------


def test_failover_on_a_hung_primary_then_failback(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """SIGSTOP the primary's puppetserver: the kernel still accepts TCP connections, nothing
    answers, so every agent run waits http_connect_timeout (3 s here) for the primary before it
    tries the replica. The RTO the product measures includes that wait, and the evidence says the
    primary was seen hung. SIGCONT: the primary serves the next run again (failback)."""
    real_puppet.arrange(connect_timeout=f"{CONNECT_TIMEOUT:g}s")
    assert real_puppet.primary.process is not None
    since = time.monotonic()
    real_puppet.primary.process.pause()
    result = _failover(lab, since)
    capture_golden(
        lab,
        "hung-primary",
        f"the primary's puppetserver SIGSTOPped, http_connect_timeout = {CONNECT_TIMEOUT:g}s",
    )
    real_puppet.primary.process.resume()
    resumed = time.monotonic()
    back = _failback(lab, resumed)
    assert result.passed, result.detail
    assert result.seconds is not None and result.seconds >= CONNECT_TIMEOUT
    seen = _agent(result.evidence)["down_server_seen_as"]
    assert isinstance(seen, dict)
    assert seen["server"] == "primary.vm:8140" and seen["kind"] == "hung"
    assert isinstance(seen["waited_seconds"], float)
    assert CONNECT_TIMEOUT <= seen["waited_seconds"] < CONNECT_TIMEOUT + 2
    assert result.detail.endswith("(primary.vm hung)")
    assert back.passed, back.detail
    assert _run(_agent(back.evidence), "last_run")["served_by"] == "primary"
    FIGURES["rto_hung_sigstop_seconds"] = result.seconds
    FIGURES["failback_after_sigcont_seconds"] = back.seconds


# --- the primary stopped: refused, then other things on its port -----------------------------


def test_failover_on_a_refused_primary(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """Stop the primary's puppetserver (SIGTERM): connections are refused, the agent moves to the
    replica at once. The RTO runs from the moment the process was gone."""
    real_puppet.arrange()
    down_at = real_puppet.stop_primary()
    result = _failover(lab, down_at)
    capture_golden(lab, "refused-primary", "the primary's puppetserver stopped (port refused)")
    assert result.passed, result.detail
    seen = _agent(result.evidence)["down_server_seen_as"]
    assert isinstance(seen, dict)
    assert seen["server"] == "primary.vm:8140" and seen["kind"] == "refused"
    assert result.detail.endswith("(primary.vm refused)")
    assert result.seconds is not None and result.seconds < 30  # one agent run, no waiting
    FIGURES["rto_refused_seconds"] = result.seconds


def test_failover_on_a_primary_answering_503(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """Something on primary.vm:8140 completes TLS with the primary's own certificate and answers
    503 (as Puppet Server does while it starts, or a proxy in front of a dead one): the agent
    takes the replica without waiting; the evidence says the primary was unavailable."""
    real_puppet.arrange(primary="stopped")
    with real_puppet.listening("503") as listener:
        since = time.monotonic()
        result = _failover(lab, since)
        capture_golden(lab, "503-primary", "primary.vm:8140 answering 503 Service Unavailable")
    assert listener.requests >= 1, "the agent never asked the 503 listener"
    assert result.passed, result.detail
    seen = _agent(result.evidence)["down_server_seen_as"]
    assert isinstance(seen, dict)
    assert seen["server"] == "primary.vm:8140" and seen["kind"] == "unavailable"
    assert result.seconds is not None and result.seconds < 30
    FIGURES["rto_503_seconds"] = result.seconds


def test_failover_on_a_listener_that_never_answers(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """A listener on primary.vm:8140 accepts TCP connections and never sends a byte (as a frozen
    host does): like SIGSTOP, each run waits http_connect_timeout, then uses the replica."""
    real_puppet.arrange(primary="stopped", connect_timeout=f"{CONNECT_TIMEOUT:g}s")
    with real_puppet.listening("hung") as listener:
        since = time.monotonic()
        result = _failover(lab, since)
        capture_golden(
            lab,
            "hung-listener",
            "primary.vm:8140 accepting TCP and never "
            f"answering, http_connect_timeout = {CONNECT_TIMEOUT:g}s",
        )
    assert listener.connections >= 1, "the agent never connected to the hung listener"
    assert result.passed, result.detail
    assert result.seconds is not None and result.seconds >= CONNECT_TIMEOUT
    seen = _agent(result.evidence)["down_server_seen_as"]
    assert isinstance(seen, dict)
    assert seen["kind"] == "hung"
    FIGURES["rto_hung_listener_seconds"] = result.seconds


def test_failover_on_a_primary_that_never_answers_http(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    """primary.vm:8140 completes TLS with the primary's certificate, takes the request and never
    answers: each run waits http_read_timeout (3 s here; 10 min by default) before it tries the
    replica, and the evidence says the primary was silent."""
    real_puppet.arrange(primary="stopped", read_timeout=f"{CONNECT_TIMEOUT:g}s")
    with real_puppet.listening("silent") as listener:
        since = time.monotonic()
        result = _failover(lab, since)
        capture_golden(
            lab,
            "silent-primary",
            "primary.vm:8140 completing TLS and never answering HTTP, "
            f"http_read_timeout = {CONNECT_TIMEOUT:g}s",
        )
    assert listener.requests >= 1, "the agent never sent a request to the silent listener"
    assert result.passed, result.detail
    assert result.seconds is not None and result.seconds >= CONNECT_TIMEOUT
    seen = _agent(result.evidence)["down_server_seen_as"]
    assert isinstance(seen, dict)
    assert seen["server"] == "primary.vm:8140" and seen["kind"] == "silent"
    assert isinstance(seen["waited_seconds"], float)
    assert CONNECT_TIMEOUT <= seen["waited_seconds"] < CONNECT_TIMEOUT + 2
    FIGURES["rto_silent_listener_seconds"] = result.seconds


def test_both_servers_down_fails_naming_both(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """The primary stopped (refused) and the replica frozen (SIGSTOP, hung): every run fails with
    exit 1, no catalog; the failover check fails within its budget and its detail names both
    servers; the evidence holds how each one looked."""
    real_puppet.arrange(
        primary="stopped", replica="paused", connect_timeout=f"{CONNECT_TIMEOUT:g}s"
    )
    since = time.monotonic()
    result = _failover(lab, since, budget=10)
    capture_golden(
        lab,
        "both-down",
        "the primary stopped and the replica SIGSTOPped, "
        f"http_connect_timeout = {CONNECT_TIMEOUT:g}s",
    )
    assert not result.passed
    assert result.detail.startswith("linux.vm was not compiled by replica.vm within 10 s")
    assert "primary.vm" in result.detail and "replica.vm:8140" in result.detail
    last = _run(_agent(result.evidence), "last_run")
    assert last["exit_code"] == 1 and last["served_by"] is None
    troubles = last["unreachable"]
    assert isinstance(troubles, list)
    assert {(t["server"], t["kind"]) for t in troubles} == {
        ("primary.vm:8140", "refused"),
        ("replica.vm:8140", "hung"),
    }


# --- the primary back: failback ----------------------------------------------------------------


def test_failback_after_the_primary_restarts(real_puppet: RealPuppetLab, lab: Lab) -> None:
    """Start the primary's puppetserver again; from the moment it serves, the failback check polls
    until the agent's plain run is compiled by the primary again."""
    real_puppet.arrange(primary="stopped")
    real_puppet.start_server(real_puppet.primary)
    real_puppet.wait_serving(real_puppet.primary)
    serving_at = time.monotonic()
    result = _failback(lab, serving_at)
    assert result.passed, result.detail
    last = _run(_agent(result.evidence), "last_run")
    assert last["served_by"] == "primary"
    assert last["commit"] == _c11(real_puppet.commits["current"])
    FIGURES["primary_restart_seconds"] = real_puppet.primary.starts[-1]
    FIGURES["failback_after_restart_seconds"] = result.seconds


def test_the_real_system_is_untouched(real_puppet: RealPuppetLab) -> None:
    """While the lab runs, Debian's Puppet directories, the accounts, sudoers, /etc/hosts, /opt
    and the hostname are as they were: everything the lab writes is in its own directories (the
    fixture checks again after it stopped everything)."""
    assert system_snapshot() == real_puppet.system_before
