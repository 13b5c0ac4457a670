"""dr-drill/negative on the shared built lab: its fault goes in once the drill holds the lab and
comes out however it ends; it passes only when the drill fails at the check meant to catch the
fault (the judging of every other outcome: sim/tests/test_negative.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle

pytestmark = pytest.mark.slow

Ops = Callable[..., list[dict[str, Any]]]
FAST = {"rto_seconds": 10.0, "replication_lag_seconds": 5.0, "failback_seconds": 10.0}


def _run(tmp_path: Path, fault: str, tags: list[str] | None = None) -> Any:
    from flows.params import Budgets
    from labsim.negative import NegativeParameters, negative_drill

    parameters = NegativeParameters(
        fault=fault,  # type: ignore[arg-type]
        confirm=["primary.vm"],
        budgets=Budgets(**FAST),
        poll_interval_seconds=0.1,
        report_dir=str(tmp_path),
    )
    from prefect import tags as tagged

    with tagged(*(tags or [])):  # (a deployment's run carries its deployment's tags)
        return negative_drill(parameters, return_state=True)


def _faults(handle: LabHandle) -> str:
    listed = subprocess.run(
        [sys.executable, "-m", "labsim.cli", "fault", "list", "--state", str(handle.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return listed.stdout


def _server_list(handle: LabHandle) -> str:
    from pe_dr.lab.live import Lab
    from pe_dr.lab.spec import load_spec
    from pe_dr.steps.replica import agent_server_list

    with Lab(load_spec(handle.spec_path)) as lab:
        return ",".join(agent_server_list(lab, "linux.vm"))


def test_the_negative_drill_passes_when_the_drill_fails_at_the_check_meant_to_catch_its_fault(
    built: LabHandle, tmp_path: Path, journal_ops: Ops
) -> None:
    from flows import journal

    mark = len(built.journal())
    planned = journal.last_step_count("dr-drill", promote=False)
    state = _run(tmp_path, "failover:broken", tags=["expected:failure"])
    assert state.is_completed(), state.message
    result = state.result()
    assert result["expected_check"] == "failover_ready"
    assert "failed at its failover_ready check" in result["verdict"]
    # the drill's own journal says it failed, there
    drill = json.loads(next(tmp_path.glob("drill-*.json")).read_text())
    assert drill["status"] == "failed"
    assert drill["failure"]["check"] == "failover_ready"
    assert any("fault failover:broken added" in n for n in drill["notes"]), drill["notes"]
    # the fault was only there while the drill ran; nothing was halted (it failed before)
    assert [e["detail"] for e in journal_ops(built, "fault.add", mark)] == ["failover:broken"]
    assert journal_ops(built, "fault.clear", mark)
    assert _faults(built) == ""
    assert not journal_ops(built, "vagrant.halt", mark)
    # the agents ran Puppet with the fault in (failover_ready saw their server_list without
    # the replica) and again after it: the next drill finds them whole
    assert "replica.vm" in _server_list(built)
    # a later drill's progress still counts against a full drill, not this failed one
    assert journal.last_step_count("dr-drill", promote=False) == planned


def test_the_negative_drill_refuses_a_lab_that_already_has_a_fault(
    built: LabHandle, tmp_path: Path, journal_ops: Ops
) -> None:
    built.fault_add("agent:fact-error")
    mark = len(built.journal())
    state = _run(tmp_path, "replica:unhealthy")
    assert state.is_failed()
    assert "the lab already has faults (agent:fact-error)" in str(state.message)
    assert not journal_ops(built, "fault.add", mark), "it added nothing"
    assert _faults(built).strip() == "agent:fact-error", "and took nothing away"
