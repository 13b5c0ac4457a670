"""Polls see a change within one interval of it landing, at no more than one probe per interval.

A fake clock stands in for time (monotonic and sleep advance it), so these tests never wait and
assert nothing about real time."""

from __future__ import annotations

import itertools
import types
from typing import Any

import pytest

from pe_dr import polling
from pe_dr.checks import agents, replication
from pe_dr.checks import result as check_result
from pe_dr.errors import ConfigError, TransientError
from pe_dr.lab.spec import LabSpec
from pe_dr.parsing.agent import AgentRun
from pe_dr.steps import replication as probe_step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            monotonic=self.monotonic, sleep=self.sleep, time=self.monotonic
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    for module in (polling, agents, replication):
        monkeypatch.setattr(module, "time", fake.module())
    return fake


class Change:
    """A condition that becomes true at `lands`; each probe takes `cost` seconds."""

    def __init__(self, clock: FakeClock, lands: float, cost: float = 0.0) -> None:
        self.clock, self.lands, self.cost = clock, lands, cost
        self.starts: list[float] = []

    def probe(self) -> bool | None:
        self.starts.append(self.clock.now)
        seen = self.clock.now >= self.lands
        self.clock.now += self.cost
        return True if seen else None


def gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("cost", [0.0, 0.3, 1.7, 2.5])
@pytest.mark.parametrize("offset", [0.01, 0.99, 1.0, 3.5, 7.25])
def test_wait_until_sees_a_change_within_one_interval(
    clock: FakeClock, cost: float, offset: float
) -> None:
    interval = 2.0
    change = Change(clock, clock.now + offset, cost)
    assert polling.wait_until(change.probe, timeout=60, interval=interval, what="x") is True
    seen_at = change.starts[-1]
    # the probe that saw it started at most one interval after it landed (or one probe's
    # duration, when a probe that just missed it overran the interval)
    assert change.lands <= seen_at <= change.lands + max(interval, cost)
    assert all(g >= interval for g in gaps(change.starts))


@pytest.mark.parametrize("cost", [0.0, 0.4, 3.0])
def test_wait_until_rate_is_bounded_and_stops_at_the_deadline(
    clock: FakeClock, cost: float
) -> None:
    interval, timeout = 1.5, 30.0
    start = clock.now
    never = Change(clock, float("inf"), cost)
    with pytest.raises(TransientError, match="timed out after 30 s waiting for the thing"):
        polling.wait_until(never.probe, timeout=timeout, interval=interval, what="the thing")
    assert all(g >= interval for g in gaps(never.starts))
    assert len(never.starts) <= timeout / max(interval, cost) + 1
    assert never.starts[-1] <= start + timeout  # no probe starts after the deadline
    # and the slots do not drift with the probes' duration
    if cost < interval:
        assert never.starts == [start + k * interval for k in range(len(never.starts))]


def test_pacer_counts_probes_and_refuses_past_the_deadline(clock: FakeClock) -> None:
    pace = polling.Pacer(5.0, clock.now + 12.0)
    assert pace.wait() and pace.wait()
    assert not pace.wait()  # the next slot (15 s) is past the deadline (12 s)
    assert pace.probes == 3
    assert clock.sleeps == [5.0, 5.0]


# --- the agent-run poller ---------------------------------------------------------------------


def _run(server: str | None) -> AgentRun:
    return AgentRun(
        exit_code=0 if server else 1,
        succeeded=server is not None,
        changed=False,
        configuration_version="replica-production-abc" if server else None,
        server=server,
        environment="production",
        commit=None,
        errors=() if server else ("Could not select a functional puppet server",),
    )


class FakeLab:
    def __init__(self) -> None:
        self.spec = LabSpec()

    def prefetch_hosts(self, names: Any) -> None:
        pass


def _wait_for_server(monkeypatch: pytest.MonkeyPatch, agent_run: Any, **kwargs: Any) -> Any:
    """wait_for_server over the tutorial's lab, each agent run answered by `agent_run`."""
    monkeypatch.setattr(agents, "agent_run", agent_run)
    return agents.wait_for_server(FakeLab(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("cost", [0.0, 0.5, 4.0])
@pytest.mark.parametrize("offset", [0.0, 2.9, 3.0, 10.1])
def test_wait_for_server_sees_failover_within_one_interval(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, cost: float, offset: float
) -> None:
    interval = 3.0
    since = clock.now
    lands = since + offset
    starts: list[float] = []

    def agent_run(lab: Any, agent: str, **kwargs: Any) -> AgentRun:
        starts.append(clock.now)
        server = "replica" if clock.now >= lands else None
        clock.now += cost
        return _run(server)

    result = _wait_for_server(
        monkeypatch,
        agent_run,
        name="failover",
        want="replica.vm",
        since=since,
        budget_seconds=120,
        poll_interval=interval,
        forbid="primary.vm",
    )
    assert result.passed, result.detail
    assert lands <= starts[-1] <= lands + max(interval, cost)
    assert all(g >= interval for g in gaps(starts))
    assert result.evidence["agents"]["linux.vm"]["passed"]  # type: ignore[index]
    assert result.seconds == pytest.approx(starts[-1] + cost - since)


def test_wait_for_server_rate_is_bounded_per_agent(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[float] = []

    def agent_run(lab: Any, agent: str, **kwargs: Any) -> AgentRun:
        starts.append(clock.now)
        clock.now += 0.2
        return _run(None)

    result = _wait_for_server(
        monkeypatch,
        agent_run,
        name="failover",
        want="replica.vm",
        since=clock.now,
        budget_seconds=20,
        poll_interval=2.0,
    )
    assert not result.passed
    assert "was not compiled by replica.vm within 20 s" in result.detail
    assert len(starts) == 11  # slots 0, 2, …, 20 s: one run per interval, none after the budget
    assert all(g >= 2.0 for g in gaps(starts))


def test_wait_for_server_without_forbid_does_not_fail_on_an_unnamed_server(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose compiling server is unknown is not `forbid` when no server is forbidden."""
    runs = iter([_run(None), _run("primary")])
    result = _wait_for_server(
        monkeypatch,
        lambda lab, agent, **kw: next(runs),
        name="failback",
        want="primary.vm",
        since=clock.now,
        budget_seconds=20,
        poll_interval=1.0,
    )
    assert result.passed, result.detail


def test_replication_poll_is_paced(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "a" * 40
    reads: list[float] = []
    lands = clock.now + 4.5

    line = "# pe-dr-drill replication marker m1 attempt 1"
    monkeypatch.setattr(
        replication, "commit_probe", lambda lab, mid: probe_step.ProbeCommit(sha, line, 1)
    )
    monkeypatch.setattr(replication, "push_control_repo", lambda lab: None)

    def signature(lab: Any, vm: str) -> tuple[str | None, float | None]:
        if vm == lab.spec.replica.name:
            reads.append(clock.now)
            return (sha if clock.now >= lands else "b" * 40), None
        return sha, None

    monkeypatch.setattr(replication, "live_commit", signature)
    monkeypatch.setattr(replication, "live_file", lambda lab, vm, name: line + "\n")
    result = replication.check_replication(
        FakeLab(),  # type: ignore[arg-type]
        run_id="m1",
        budget_seconds=60,
        poll_interval=2.0,
    )
    assert result.passed, result.detail
    assert lands <= reads[-1] <= lands + 2.0
    assert all(g >= 2.0 for g in gaps(reads))


# --- progress lines on long waits ---------------------------------------------------------------


@pytest.fixture
def progress_lines() -> Any:
    lines: list[str] = []
    polling.add_progress_sink(lines.append)
    yield lines
    polling.remove_progress_sink(lines.append)


def test_a_long_wait_reports_after_10_s_then_at_most_every_30_s(
    clock: FakeClock, progress_lines: list[str]
) -> None:
    start = clock.now
    seen_at: list[float] = []
    polling.add_progress_sink(lambda line: seen_at.append(clock.now))
    never = Change(clock, float("inf"))
    with pytest.raises(TransientError):
        polling.wait_until(never.probe, timeout=100, interval=7, what="replica.vm to deploy x")
    assert progress_lines[0] == "waiting for replica.vm to deploy x 10/100 s"
    assert [round(t - start) for t in seen_at] == [10, 40, 70]  # on time, between probes too
    assert len(progress_lines) == 3
    # the probes kept their grid: progress never shifts or adds a probe
    assert never.starts == [start + 7 * k for k in range(len(never.starts))]


def test_a_short_wait_and_an_unnamed_wait_say_nothing(
    clock: FakeClock, progress_lines: list[str]
) -> None:
    change = Change(clock, clock.now + 9.5)
    polling.wait_until(change.probe, timeout=100, interval=1, what="something quick")
    pace = polling.Pacer(5.0, clock.now + 60.0)  # no `what`: a bare pacer stays silent
    while pace.wait():
        pass
    assert progress_lines == []


def test_progress_counts_from_since_and_a_failing_sink_does_not_fail_the_wait(
    clock: FakeClock, progress_lines: list[str]
) -> None:
    def broken(line: str) -> None:
        raise RuntimeError("sink down")

    polling.add_progress_sink(broken)
    try:
        pace = polling.Pacer(1.0, clock.now + 50, what="linux.vm", since=clock.now - 20)
        assert pace.wait()
    finally:
        polling.remove_progress_sink(broken)
    assert progress_lines == ["waiting for linux.vm 20/70 s"]


# --- the replication marker: a change of its own on every attempt --------------------------------


class FakePrimary:
    """The primary's control repo: its files and a git log, as commit_probe sees them."""

    def __init__(self, puppetfile: str, log: list[str]) -> None:
        self.files = {"Puppetfile": puppetfile}
        self.log, self.commits, self.added = log, 0, [[]]

    def exists(self, path: str, root: bool = False) -> bool:
        return path.rsplit("/", 1)[-1] in self.files

    def read(self, path: str, root: bool = False) -> bytes:
        return self.files[path.rsplit("/", 1)[-1]].encode()

    def put(self, path: str, content: bytes, **kwargs: Any) -> None:
        self.files[path.rsplit("/", 1)[-1]] = content.decode()

    def run(self, argv: list[str], root: bool = False, **kwargs: Any) -> Any:
        if "add" in argv:
            self.added.append(argv[argv.index("add") + 1 :])
        if "commit" in argv:
            self.commits += 1
            message = argv[argv.index("-m") + 1]
            self.log.insert(0, f"{len(self.log) + 1:040d} {message}")
        if "rev-parse" in argv:
            return types.SimpleNamespace(stdout=self.log[0].split()[0] + "\n")
        if "log" in argv:
            return types.SimpleNamespace(stdout="\n".join(self.log) + "\n")
        return types.SimpleNamespace(stdout="")


class ProbeLab(FakeLab):
    def __init__(self, primary: FakePrimary) -> None:
        super().__init__()
        self.primary = primary

    def host(self, name: str) -> FakePrimary:
        return self.primary


def test_every_attempt_commits_a_probe_of_its_own_in_one_file_the_drill_owns() -> None:
    primary = FakePrimary("mod 'x'\n", [f"{0:040d} first commit"])
    lab = ProbeLab(primary)
    one = probe_step.commit_probe(lab, "run-1")  # type: ignore[arg-type]
    two = probe_step.commit_probe(lab, "run-1")  # type: ignore[arg-type]  (the Retry's attempt)
    other = probe_step.commit_probe(lab, "run-10")  # type: ignore[arg-type]  (a new run)
    assert primary.commits == 3, "each attempt made a commit, so each push sends something"
    assert (one.attempt, two.attempt, other.attempt) == (1, 2, 1)
    assert one.sha != two.sha
    assert two.text == "# pe-dr-drill replication marker run-1 attempt 2"
    assert two.earlier == ((1, one.sha),), "the journal names the commit attempt 1 measured"
    assert other.earlier == ()
    # nothing piles up: the marker file holds the latest marker, the Puppetfile is the admin's
    assert primary.files[probe_step.PROBE_FILE] == other.text + "\n"
    assert primary.files["Puppetfile"] == "mod 'x'\n"
    assert primary.added[1:] == [[probe_step.PROBE_FILE]] * 3


def test_probe_lines_earlier_versions_left_in_the_puppetfile_are_removed_once() -> None:
    primary = FakePrimary(
        "mod 'x'\n# pe-dr-drill replication marker run-1\n"
        "# pe-dr-drill replication marker run-0 attempt 3\n",
        [f"{7:040d} pe-dr-drill: pe-dr-drill replication marker run-1"],
    )
    mark = probe_step.commit_probe(ProbeLab(primary), "run-1")  # type: ignore[arg-type]
    assert mark.attempt == 2, "a legacy marker of the run counts as its attempt 1"
    assert mark.earlier == ((1, f"{7:040d}"),)
    assert primary.files["Puppetfile"] == "mod 'x'\n"
    assert primary.added[1] == [probe_step.PROBE_FILE, "Puppetfile"]
    probe_step.commit_probe(ProbeLab(primary), "run-2")  # type: ignore[arg-type]
    assert primary.added[2] == [probe_step.PROBE_FILE], "removed once: then there are none"


def test_a_failed_replication_check_names_what_the_replica_has_never_none(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = "c" * 40
    earlier = ((1, "d" * 40),)
    mark = probe_step.ProbeCommit(sha, "# pe-dr-drill replication marker m attempt 2", 2, earlier)
    monkeypatch.setattr(replication, "commit_probe", lambda lab, mid: mark)
    monkeypatch.setattr(replication, "push_control_repo", lambda lab: None)
    monkeypatch.setattr(replication, "live_commit", lambda lab, vm: (None, None))
    result = replication.check_replication(
        FakeLab(),  # type: ignore[arg-type]
        run_id="m",
        budget_seconds=5,
        poll_interval=1.0,
    )
    assert not result.passed
    assert "None" not in result.detail
    assert "replica has no deployed code" in result.detail
    assert f"commit {sha[:11]} (attempt 2; earlier: {'d' * 11} (attempt 1))" in result.detail
    assert result.evidence["attempt"] == 2
    assert result.evidence["earlier_attempts"] == [{"attempt": 1, "commit": "d" * 40}]


# --- the fan-out bound ---------------------------------------------------------------------------


def test_fan_out_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(check_result.MAX_PARALLEL_ENV, raising=False)
    assert check_result.max_parallel_agents() == check_result.MAX_PARALLEL_AGENTS
    monkeypatch.setenv(check_result.MAX_PARALLEL_ENV, "8")
    assert check_result.max_parallel_agents() == 8
    for bad in ("0", "lots"):
        monkeypatch.setenv(check_result.MAX_PARALLEL_ENV, bad)
        with pytest.raises(ConfigError, match=check_result.MAX_PARALLEL_ENV):
            check_result.max_parallel_agents()


def test_fan_out_keeps_order_and_respects_the_bound() -> None:
    import threading

    active, peak, lock = 0, 0, threading.Lock()
    gate = threading.Barrier(3, timeout=10)

    def work(agent: str) -> check_result.CheckResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        if agent in {"a0", "a1", "a2"}:
            gate.wait()  # the first three run at once: the pool is really parallel
        with lock:
            active -= 1
        return check_result.CheckResult("x", True, agent)

    agents = [f"a{i}" for i in range(12)]
    results = check_result.fan_out(agents, work, limit=3)
    assert [r.detail for r in results] == agents
    assert peak == 3
