"""The drill end to end against labsim: it passes on a healthy lab and fails, at the check that
should catch it, on a broken one. One lab is built per module; faults come and go between drills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle, running_lab
from pe_dr.report import DrillReport

pytestmark = pytest.mark.slow

FAST = {"rto_seconds": 10.0, "replication_lag_seconds": 5.0, "failback_seconds": 10.0}


def drill(tmp: Path, **overrides: Any) -> tuple[bool, DrillReport]:
    from flows import common
    from flows.dr_drill import dr_drill
    from flows.params import Budgets, DrillParameters

    budgets = Budgets(**{**FAST, **overrides.pop("budgets", {})})
    params = DrillParameters(
        confirm=["primary.vm"],
        budgets=budgets,
        poll_interval_seconds=0.1,
        report_dir=str(tmp),
        **overrides,
    )
    common.last_report = None
    state = dr_drill(params, return_state=True)
    report = common.last_report
    assert report is not None, "every drill writes a journal"
    return state.is_completed(), report


def ops(handle: LabHandle, op: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in handle.journal()[since:] if e.get("op") == op]


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None
) -> Iterator[tuple[LabHandle, bool, DrillReport]]:
    """A labsim lab built by the drill itself from nothing (all VMs not_created)."""
    state = tmp_path_factory.mktemp("lab")
    with running_lab(state) as handle, pytest.MonkeyPatch.context() as mp:
        for name, value in handle.env.items():
            mp.setenv(name, value)
        assert set(handle.status().values()) == {"not_created"}
        ok, report = drill(tmp_path_factory.mktemp("reports"))
        yield handle, ok, report


@pytest.fixture
def built(lab: tuple[LabHandle, bool, DrillReport]) -> Iterator[LabHandle]:
    handle, ok, report = lab
    assert ok, f"the first drill must pass to test the rest: {report.to_dict()}"
    yield handle
    handle.fault_clear()
    assert handle.status()["primary.vm"] == "running", "every drill leaves the lab whole"


def test_the_drill_builds_a_fresh_lab_and_passes(lab: tuple[LabHandle, bool, DrillReport]) -> None:
    handle, ok, report = lab
    data = report.to_dict()
    assert ok and data["status"] == "passed", data
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
    }
    assert all(c["passed"] for c in checks.values())
    assert "replica-production-" in checks["failover"]["detail"]
    m = data["measurements"]
    assert all(isinstance(m[k], float) and m[k] > 0 for k in m), m
    # The tutorial's order of work is visible in the lab's own journal.
    assert len(ops(handle, "puppet.infrastructure.provision")) == 1
    assert all(s["attempts"] >= 1 for s in data["steps"] if s["status"] == "completed")
    assert handle.status() == {vm: "running" for vm in handle.status()}


def test_on_a_built_lab_setup_only_looks(built: LabHandle, tmp_path: Path) -> None:
    before = len(built.journal())
    ok, report = drill(tmp_path)
    assert ok, report.to_dict()
    # The failover drill itself starts the primary again; nothing else is brought up.
    ups = [e for e in ops(built, "vagrant.up", before) if e.get("vm") != "primary.vm"]
    assert ups == [], "running VMs are not started again"
    assert ops(built, "puppet.infrastructure.provision", before) == []
    assert ops(built, "gitlab.rails-runner", before) == []
    path = next(tmp_path.glob("drill-*.json"))
    assert json.loads(path.read_text())["status"] == "passed"


@pytest.mark.parametrize(
    ("fault", "check", "words", "budgets"),
    [
        ("replication:broken", "replication", "file sync to the replica is failing", {}),
        (
            "replication:lag=4",
            "replication",
            "was not on replica.vm 2 s after the push",
            {"replication_lag_seconds": 2.0},
        ),
        ("replica:unhealthy", "health", "replica.vm", {}),
        ("halt:ignored=primary.vm", "primary_down", "still accepts connections on 8140", {}),
    ],
)
def test_a_broken_lab_fails_the_drill_at_the_right_check(
    built: LabHandle,
    tmp_path: Path,
    fault: str,
    check: str,
    words: str,
    budgets: dict[str, float],
) -> None:
    built.fault_add(fault)
    ok, report = drill(tmp_path, budgets=budgets)
    data = report.to_dict()
    assert not ok and data["status"] == "failed"
    failed = [c for c in data["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == [check], data["checks"]
    assert words in failed[0]["detail"]
    path = next(tmp_path.glob("drill-*.json"))
    assert json.loads(path.read_text())["status"] == "failed"


def test_halt_ignored_still_leaves_the_primary_running(built: LabHandle, tmp_path: Path) -> None:
    built.fault_add("halt:ignored=primary.vm")
    ok, report = drill(tmp_path)
    assert not ok
    assert any("started it again" in n for n in report.notes), report.notes


def test_a_transient_fault_is_absorbed_and_the_attempts_are_journaled(
    built: LabHandle, tmp_path: Path
) -> None:
    built.fault_add("fail:puppet-code.deploy=1")
    ok, report = drill(tmp_path)
    assert ok, report.to_dict()
    deploy = [s for s in report.steps if s.name == "ensure-code-deployed"]
    assert deploy and deploy[0].attempts == 2
    faults = [e for e in ops(built, "puppet-code.deploy") if e.get("outcome") == "fault"]
    assert len(faults) == 1


def test_a_permanent_fault_stops_the_drill_at_that_step(built: LabHandle, tmp_path: Path) -> None:
    built.fault_add("fail:puppet-code.deploy")
    before = len(built.journal())
    ok, report = drill(tmp_path)
    assert not ok
    failed = [s for s in report.steps if s.status == "failed"]
    assert failed[0].name == "ensure-code-deployed"
    assert failed[0].attempts == 4, "three retries, then the step fails"
    assert "puppet-code deploy" in failed[0].detail
    assert ops(built, "vagrant.halt", before) == [], "nothing after the failed step ran"


def test_the_command_line_with_a_private_lab_fails_a_broken_failover(tmp_path: Path) -> None:
    """`pe-dr drill --lab sim --fault failover:broken`: exit 1 naming the check; no lab left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_DR_LAB", "LABSIM"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "drill",
            "--lab",
            "sim",
            "--fault",
            "failover:broken",
            "--report-dir",
            str(tmp_path / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert "replica.vm is missing, so agents cannot fail over" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads(next((tmp_path / "reports").glob("drill-*.json")).read_text())
    assert report["status"] == "failed"
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["failover_ready"]
    leftovers = subprocess.run(
        ["pgrep", "-f", "pe-dr-labsim-"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", "the private lab was stopped"
