"""The drill end to end against labsim: it passes on a healthy lab and fails, at the check that
should catch it, on a broken one. One lab is built per module; faults come and go between drills."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.report import DrillReport

pytestmark = pytest.mark.slow

Drill = Callable[..., tuple[bool, DrillReport]]
Ops = Callable[..., list[dict[str, Any]]]


def test_the_drill_builds_a_fresh_lab_and_passes(
    lab: tuple[LabHandle, bool, DrillReport], journal_ops: Ops
) -> None:
    from pe_dr.lab.spec import load_spec

    handle, ok, report = lab
    data = report.to_dict()
    assert ok and data["status"] == "passed", data
    # its lab came from PE_DR_LAB_SPEC, as a deployment's run takes it: the report still names it
    assert data["lab"]["name"] == load_spec(handle.spec_path).name, data["lab"]
    assert "Lab `None`" not in report.to_markdown()
    names = [s["name"] for s in data["steps"]]
    for step in (
        "vm-up primary.vm",
        "ensure-r10k-key",
        "ensure-control-repo-pushed",
        "ensure-replica-enabled",
        "ensure-secret-keys-copied",
        "halt-primary",
        "measure-failover",
        "measure-failback",
        "check-steady-state",
    ):
        assert step in names
    checks = {c["name"]: c for c in data["checks"]}
    assert set(checks) >= {
        "health",
        "replication",
        "agent_on_both_servers",
        "failover_ready",
        "primary_down",
        "failover",
        "failback",
        "steady_state",
    }
    assert all(c["passed"] for c in checks.values())
    assert "replica-production-" in checks["failover"]["detail"]
    m = data["measurements"]
    # a drill without --promote measures neither a promotion nor a reprotect
    assert m["promotion_seconds"] is None and m["reprotect_seconds"] is None, m
    m = {k: v for k, v in m.items() if k not in ("promotion_seconds", "reprotect_seconds")}
    assert all(isinstance(m[k], float) and m[k] >= 0 for k in m), m
    # PE prints the sync's age in whole seconds: labsim syncs every 0.12 s, so it reads 0
    assert all(m[k] > 0 for k in m if k != "puppetdb_sync_seconds"), m
    # The tutorial's order of work is visible in the lab's own journal.
    assert len(journal_ops(handle, "puppet.infrastructure.provision")) == 1
    assert all(s["attempts"] >= 1 for s in data["steps"] if s["status"] == "completed")
    assert handle.status() == {vm: "running" for vm in handle.status()}


def test_on_a_built_lab_setup_only_looks(
    built: LabHandle,
    tmp_path: Path,
    run_drill: Drill,
    journal_ops: Ops,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pe_dr.lab import live as lab_module

    # count this drill's SSH connections and settings from none open or remembered, as in a
    # fresh process (an earlier drill of this one left them)
    lab_module.close_connections()
    monkeypatch.setattr(lab_module, "_ssh_params", {})
    before = len(built.journal())
    ok, report = run_drill(tmp_path)
    assert ok, report.to_dict()
    # The failover drill itself starts the primary again; nothing else is brought up.
    ups = [e for e in journal_ops(built, "vagrant.up", before) if e.get("vm") != "primary.vm"]
    assert ups == [], "running VMs are not started again"
    assert journal_ops(built, "puppet.infrastructure.provision", before) == []
    assert journal_ops(built, "gitlab.rails-runner", before) == []
    path = next(tmp_path.glob("drill-*.json"))
    written = json.loads(path.read_text())
    assert written["status"] == "passed"
    # the PE the primary runs, as it says (labsim's primary.vm writes PE's version file)
    assert written["pe_version"] == {"spec": "2025.8.0", "reported_by_primary": "2025.8.0"}
    # One SSH connection of the drill's per VM for the whole drill (the steps share them), and one
    # more to the primary after the failover halted and started it (the lab's own git and
    # ssh-keyscan connections to gitlab.vm are not the drill's).
    connects: dict[str, int] = {}
    for e in journal_ops(built, "ssh.login", before):
        if e["detail"] == "vagrant":
            connects[e["vm"]] = connects.get(e["vm"], 0) + 1
    assert connects == {"primary.vm": 2, "replica.vm": 1, "gitlab.vm": 1, "linux.vm": 1}
    # SSH settings: every running VM's at pre-flight, in one call; the primary's after its start
    ssh_configs = [
        e["detail"]
        for e in journal_ops(built, "vagrant.command", before)
        if e["detail"].startswith("ssh-config")
    ]
    assert len(ssh_configs) == 2, ssh_configs
    assert sorted(ssh_configs[0].split()[1:]) == sorted(built.status())
    assert ssh_configs[1] == "ssh-config primary.vm"
    # At most one `vagrant status` per step (each is a Ruby start-up on a real lab): a step's
    # window holds no more of them than the steps running then (the VMs start in parallel).
    statuses = [
        e["time"]
        for e in journal_ops(built, "vagrant.command", before)
        if e["detail"].split()[0] == "status"
    ]
    for step in report.steps:
        a, b = step.started_at, step.ended_at
        overlapping = [s for s in report.steps if s.started_at <= b and s.ended_at >= a]
        within = [t for t in statuses if a <= t <= b]
        assert len(within) <= len(overlapping), f"{step.name}: {len(within)} `vagrant status`"


@pytest.mark.parametrize(
    ("fault", "check", "words", "budgets"),
    [
        ("replication:broken", "replication", "file sync to the replica is failing", {}),
        (
            # a lag far beyond the budget: a sync an earlier deploy left pending cannot bring the
            # new commit within the budget, however slow the machine (lag=4 could, when busy)
            "replication:lag=60",
            "replication",
            "was not on replica.vm 2 s after the push",
            {"replication_lag_seconds": 2.0},
        ),
        # PE keeps every service `running` and reports the trouble as an error alert
        ("replica:unhealthy", "health", "replica.vm PuppetDB reports the error alert", {}),
        (
            "replica:db-replication-inactive",
            "health",
            "'Database replication for Classifier is inactive'",
            {},
        ),
        ("halt:ignored=primary.vm", "primary_down", "still answers on 8140", {}),
        # classification broken on a built lab: the agents keep the replica in their puppet.conf
        # until their next Puppet run, which the drill's --noop runs never are
        (
            "failover:broken",
            "failover_ready",
            "replica.vm is missing from PE Agent's classified server_list",
            {},
        ),
        # one store's database replication broken: PE says so for that store alone, and the
        # health check sees it before anything is halted (test_failover_drill.py: the failover
        # drill alone catches it on the replica)
        ("replication:rbac=broken", "health", "'Database replication for RBAC is inactive'", {}),
    ],
)
def test_a_broken_lab_fails_the_drill_at_the_right_check(
    built: LabHandle,
    tmp_path: Path,
    fault: str,
    check: str,
    words: str,
    budgets: dict[str, float],
    run_drill: Drill,
) -> None:
    built.fault_add(fault)
    ok, report = run_drill(tmp_path, budgets=budgets)
    data = report.to_dict()
    assert not ok and data["status"] == "failed"
    failed = [c for c in data["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == [check], data["checks"]
    assert words in failed[0]["detail"]
    path = next(tmp_path.glob("drill-*.json"))
    assert json.loads(path.read_text())["status"] == "failed"


def test_halt_ignored_still_leaves_the_primary_running(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("halt:ignored=primary.vm")
    ok, report = run_drill(tmp_path)
    assert not ok
    assert any("started it again" in n for n in report.notes), report.notes


def test_a_transient_fault_is_absorbed_and_the_attempts_are_journaled(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    # the classifier answers 503 once: setting pe_master's parameters reads it on every run
    built.fault_add("fail:api.classifier=1")
    ok, report = run_drill(tmp_path)
    assert ok, report.to_dict()
    retried = [(s.name, s.attempts) for s in report.steps if s.attempts > 1]
    assert retried == [("ensure-pe-master-params", 2)], report.steps
    faults = [e for e in journal_ops(built, "api.classifier") if e.get("outcome") == "fault"]
    assert len(faults) == 1


def test_a_permanent_fault_stops_the_drill_at_that_step(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    built.fault_add("fail:api.classifier")
    before = len(built.journal())
    ok, report = run_drill(tmp_path)
    assert not ok
    failed = [s for s in report.steps if s.status == "failed"]
    assert failed[0].name == "ensure-pe-master-params"  # the first step that reads it
    assert failed[0].attempts == 4, "three retries, then the step fails"
    assert "classifier API" in failed[0].detail and "503" in failed[0].detail
    assert journal_ops(built, "vagrant.halt", before) == [], "nothing after the failed step ran"


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (None, "refused"),  # the tutorial's `vagrant halt`: connections refused
        ("halt:hang=primary.vm", "hung"),  # accepts TCP, never answers
        ("halt:unreachable=primary.vm", "unreachable"),  # no route to the host
    ],
)
def test_failover_works_however_the_primary_is_down_and_says_how(
    built: LabHandle, tmp_path: Path, run_drill: Drill, fault: str | None, kind: str
) -> None:
    if fault:
        built.fault_add(fault)
    ok, report = run_drill(tmp_path, flow="failover_drill")
    assert ok, report.to_dict()
    checks = {c["name"]: c for c in report.to_dict()["checks"]}
    failover = checks["failover"]
    seen = failover["evidence"]["agents"]["linux.vm"]["down_server_seen_as"]
    assert seen["server"] == "primary.vm:8140" and seen["kind"] == kind, seen
    assert f"(primary.vm {kind})" in failover["detail"]
    if kind == "hung":
        # the agent waited its http_connect_timeout (120 s, modelled at the lab's time scale)
        assert seen["waited_seconds"] >= 120
        assert report.measurements["rto_seconds"] >= 120 * 0.001
        assert checks["primary_down"]["evidence"]["port_8140"] == "hung"


@pytest.mark.parametrize(
    ("starting_seconds", "budget", "passes"),
    [(2000, 600.0, True), (600000, 1.0, False)],
    ids=["waits-for-puppetdb", "still-starting-fails"],
)
def test_after_failback_the_drill_waits_for_every_service_and_fails_if_one_never_runs(
    built: LabHandle,
    tmp_path: Path,
    run_drill: Drill,
    starting_seconds: int,
    budget: float,
    passes: bool,
) -> None:
    """The steady state after the drill: the restarted primary's PuppetDB reports `starting` for
    a while (2 s here); the final check waits it out, but not past its budget."""
    built.fault_add(f"slow:puppetdb.start={starting_seconds}")
    ok, report = run_drill(
        tmp_path, flow="failover_drill", budgets={"steady_state_seconds": budget}
    )
    checks = {c["name"]: c for c in report.to_dict()["checks"]}
    steady = checks["steady_state"]
    assert ok is passes and steady["passed"] is passes, steady
    assert steady["evidence"]["looks"] > 1, steady  # the first look saw PuppetDB starting
    if not passes:
        assert "primary.vm PuppetDB is starting" in steady["detail"], steady
        assert "budget 1 s" in steady["detail"], steady
        failure = report.failure()
        assert failure and failure["step"] == "check-steady-state", failure
        assert failure["check"] == "steady_state", failure
    assert checks["failback"]["passed"], "the failback itself was fine"


def test_a_figure_over_its_budget_fails_its_check_even_when_the_first_look_sees_it(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    """The first agent run after the halt is served by the replica, yet later than the budget:
    that is a failed RTO, not a pass (it was one: only a poll that did not see it checked the
    deadline)."""
    ok, report = run_drill(tmp_path, flow="failover_drill", budgets={"rto_seconds": 0.001})
    failover = next(c for c in report.to_dict()["checks"] if c["name"] == "failover")
    assert not ok and not failover["passed"], failover
    assert "over its 0.001 s budget" in failover["detail"], failover
    assert report.measurements["rto_seconds"] > 0.001, "the figure is kept, over its budget"


def test_replication_lag_is_measured_at_least_as_long_as_the_lab_delays_it(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("replication:lag=2")
    ok, report = run_drill(tmp_path)
    assert ok, report.to_dict()
    assert report.measurements["replication_lag_seconds"] >= 2.0


def test_a_failing_fact_is_evidence_not_a_failed_run(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("agent:fact-error")
    ok, report = run_drill(tmp_path, flow="failover_drill")
    assert ok, report.to_dict()
    failover = next(c for c in report.to_dict()["checks"] if c["name"] == "failover")
    last = failover["evidence"]["agents"]["linux.vm"]["last_run"]
    assert last["served_by"] == "replica" and last["exit_code"] == 0
    assert any("pe_dr_broken" in e for e in last["errors"]), last
    assert "with 1 Error: line" in failover["detail"]


def test_promotion_is_refused_while_the_primary_answers(built: LabHandle, journal_ops: Ops) -> None:
    """PE's `promote` does not check that the old primary is gone; the drill must."""
    from pe_dr.errors import PreconditionError
    from pe_dr.lab.live import Lab
    from pe_dr.lab.spec import load_spec
    from pe_dr.steps import promotion

    before = len(built.journal())
    with Lab(load_spec(built.spec_path)) as live, pytest.raises(PreconditionError) as refused:
        promotion.promote_replica(live)
    assert "primary.vm is running" in str(refused.value)
    assert journal_ops(built, "puppet.infrastructure.promote", before) == []
