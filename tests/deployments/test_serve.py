"""The workstation path: `pe-dr serve` serves every deployment from one process, runs the monthly
drill, and stops cleanly on SIGTERM without pausing the schedule; a run by hand asks for approval
in the UI (approved, rejected, unanswered) before it halts anything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.catalog import catalog
from labsim.testing import LabHandle

from .conftest import (
    Api,
    PrefectServer,
    assert_monthly_runs_scheduled,
    drill_parameters,
    group_alive,
    run_monthly_drill,
    start_in_session,
    statuses,
    stop_group,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Served by `pe-dr serve`: the catalog (whose names tests/deployments/test_catalog.py spells out)
BY_HAND = tuple(d.full_name for d in catalog() if d.cron is None)


@contextlib.contextmanager
def pe_dr_serve(
    server: PrefectServer, lab: LabHandle, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_in_session(server, lab, log, "pe-dr", "serve")
    try:
        yield proc
    finally:
        stop_group(proc)


@pytest.fixture
def serving(
    server: PrefectServer, lab: LabHandle, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with pe_dr_serve(server, lab, tmp_path / "serve.log") as proc:
        yield proc


def test_pe_dr_serve_runs_the_monthly_drill_and_stops_cleanly(
    api: Api, serving: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    names = [*BY_HAND, "dr-drill/monthly"]
    found = wait_for(
        "pe-dr serve to register every deployment",
        lambda: [api.deployment(name) for name in names],
        timeout=60,
    )
    for manual in found[:-1]:
        assert manual["tags"][:2] == ["pe-dr", "manual"]
        assert not manual["schedules"]
    deployment = found[-1]
    assert_monthly_runs_scheduled(api, deployment["id"])
    run_monthly_drill(api, tmp_path)

    os.killpg(serving.pid, signal.SIGTERM)
    assert serving.wait(60) == 0
    assert not group_alive(serving.pid), "pe-dr serve left processes behind"
    after = api.deployment("dr-drill/monthly")
    assert not after["paused"], "stopping pe-dr serve must not pause the monthly schedule"
    assert after["schedules"][0]["active"]


@pytest.mark.timeout(600)
def test_stopping_pe_dr_serve_mid_failover_cancels_the_run_and_a_new_serve_resumes_its_retry(
    server: PrefectServer, api: Api, lab: LabHandle, tmp_path: Path
) -> None:
    """SIGTERM to `pe-dr serve` while the drill has the primary down: the run ends Cancelled (or
    Crashed), the primary is running again, and a Retry picked up by a new `pe-dr serve` resumes:
    set-up steps cached, nothing acting on the lab again but the failover."""
    with pe_dr_serve(server, lab, tmp_path / "serve-1.log") as serving:
        wait_for(
            "pe-dr serve to register the drill",
            lambda: api.deployment("dr-drill/monthly"),
            timeout=60,
        )
        # The halt takes 3 s more, and the fault goes in while it runs: the drill cannot get
        # through the failover before the fault is there (a loaded machine once let it).
        lab.fault_add("slow:vagrant.halt=3000")
        run_id = api.run("dr-drill/monthly", drill_parameters(tmp_path))
        mark = len(lab.journal())
        wait_for(
            "the drill to start halting the primary",
            lambda: any(
                e["op"] == "vagrant.command" and str(e.get("detail", "")).startswith("halt")
                for e in lab.journal()[mark:]
            ),
            timeout=240,
            every=0.2,
        )
        lab.fault_add("fail:puppet.agent@linux.vm")  # the failover wait cannot end by itself
        wait_for(
            "the halt to end",
            lambda: any(
                e["op"] == "vagrant.halt" and e["outcome"] == "ok" for e in lab.journal()[mark:]
            ),
            timeout=60,
            every=0.2,
        )
        os.killpg(serving.pid, signal.SIGTERM)
        assert serving.wait(90) == 0, (tmp_path / "serve-1.log").read_text()[-3000:]
    stopped = api.wait_final(run_id, timeout=60)
    assert stopped["state"]["type"] in {"CANCELLED", "CRASHED"}, stopped["state"]
    assert lab.status()["primary.vm"] == "running", "the stopped drill started the primary again"
    first = [j for j in _journals(tmp_path) if j["flow_run_id"] == run_id]
    assert [j["status"] for j in first] == ["interrupted"], first
    assert "SIGTERM" in first[0]["interrupted"]
    lab.fault_clear()

    mark = len(lab.journal())
    with pe_dr_serve(server, lab, tmp_path / "serve-2.log"):
        response = api.http.post(
            f"/flow_runs/{run_id}/set_state",
            json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
        )
        response.raise_for_status()
        run = api.wait_final(run_id, timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["run_count"] >= 2
    last = [j for j in _journals(tmp_path) if j["flow_run_id"] == run_id][-1]
    assert last["status"] == "passed", last
    status = statuses(last)
    for done in ("lab-setup", "code-manager-setup", "replica-activation", "replication-check"):
        assert status[done] == "cached", (done, status)
    assert status["measure-failover"] == "completed"
    again = [e["op"] for e in lab.journal()[mark:]]
    assert "puppet-code.deploy" not in again and "git.push" not in again, "setup did not act"
    assert again.count("vagrant.halt") == 1, "the retry measured a failover of its own"


def _journals(folder: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("drill-*.json"))]


# --- approval in the UI (last in this module: the served lab is built by then) ---------------


@pytest.fixture(scope="module")
def approving(
    server: PrefectServer, api: Api, lab: LabHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One `pe-dr serve` for the approval tests, on a built lab."""
    tmp = tmp_path_factory.mktemp("approval")
    with pe_dr_serve(server, lab, tmp / "serve.log"):
        wait_for(
            "pe-dr serve to register the failover drill",
            lambda: api.deployment("failover-drill/halt-primary"),
            timeout=60,
        )
        if set(lab.status().values()) != {"running"}:  # this module's first test did not run
            built = api.wait_final(api.run("dr-drill/monthly", drill_parameters(tmp)), 240)
            assert built["state"]["type"] == "COMPLETED", built["state"]
        yield api


def _failover_asking(api: Api, timeout_seconds: int) -> str:
    return api.run(
        "failover-drill/halt-primary",
        {
            "parameters": {
                "confirm": ["primary.vm"],
                "approval": "ask",
                "approval_timeout_seconds": timeout_seconds,
                "poll_interval_seconds": 0.2,
            }
        },
    )


def _paused(api: Api, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = wait_for(
        f"flow run {run_id} to ask for approval",
        lambda: (r := api.flow_run(run_id))["state"]["type"] == "PAUSED" and r,
        timeout=120,
        every=0.5,
    )
    return run


def _resume(api: Api, run_id: str, **answer: str) -> dict[str, Any]:
    response = api.http.post(f"/flow_runs/{run_id}/resume", json={"run_input": answer})
    response.raise_for_status()
    return dict(response.json())


def _notes(api: Api, run_id: str) -> list[str]:
    response = api.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}})
    response.raise_for_status()
    return [m["message"] for m in response.json() if m["message"].startswith("note: ")]


def _latest_report(api: Api, run_id: str) -> str:
    """The markdown of the run's newest report artifact (notes included)."""
    response = api.http.post(
        "/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}}, "sort": "CREATED_DESC"},
    )
    response.raise_for_status()
    reports = [a["data"] for a in response.json() if "## " in str(a["data"])]
    assert reports, response.json()
    return str(reports[0])


def _halts(lab: LabHandle, since: int) -> int:
    return sum(e["op"] == "vagrant.halt" for e in lab.journal()[since:])


def test_a_rejected_run_halts_nothing_ends_cancelled_and_its_retry_asks_again_and_is_approved(
    approving: Api, lab: LabHandle
) -> None:
    api, mark = approving, len(lab.journal())
    run_id = _failover_asking(api, timeout_seconds=120)
    paused = _paused(api, run_id)
    # the UI's Resume form: the question, a decision and a reason
    keyset = paused["state"]["state_details"]["run_input_keyset"]
    schema = api.http.get(f"/flow_runs/{run_id}/input/{keyset['schema']}").json()
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    assert set(schema["required"]) == {"decision", "reason", "approver"}
    question = api.http.get(f"/flow_runs/{run_id}/input/{keyset['description']}").json()
    assert "halt primary.vm" in question
    assert _resume(api, run_id, decision="approve")["status"] == "REJECT", "a reason is required"
    no_name = _resume(api, run_id, decision="approve", reason="drill window")
    assert no_name["status"] == "REJECT", "and a name (Prefect's server records no user)"
    assert _halts(lab, mark) == 0, "nothing is halted before the answer"

    rejected = _resume(api, run_id, decision="reject", reason="change freeze", approver="Ana Ops")
    assert rejected["status"] == "ACCEPT"
    run = api.wait_final(run_id, timeout=60)
    assert run["state"]["type"] == "CANCELLED", run["state"]
    assert "rejected in the Prefect UI by Ana Ops: change freeze" in run["state"]["message"]
    assert "note: rejected in the Prefect UI by Ana Ops: change freeze" in _notes(api, run_id)
    assert _halts(lab, mark) == 0 and lab.status()["primary.vm"] == "running"
    # Prefect counts the resume from the pause as run 2; it was the first attempt (24.4)
    assert "attempt 1 of this flow run" in _latest_report(api, run_id)

    # Retry: the run asks again (not the stored rejection), and an approval drills
    response = api.http.post(
        f"/flow_runs/{run_id}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
    )
    response.raise_for_status()
    _paused(api, run_id)
    assert _halts(lab, mark) == 0
    approved = _resume(api, run_id, decision="approve", reason="drill window", approver="Bo")
    assert approved["status"] == "ACCEPT"
    # a whole failover drill (halt, measure, start again): as long as the build's bound above
    run = api.wait_final(run_id, timeout=240)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert _halts(lab, mark) == 1
    assert "attempt 2 of this flow run" in _latest_report(api, run_id)
    assert any(
        n.startswith("note: approved in the Prefect UI by Bo to halt primary.vm")
        and "drill window" in n
        for n in _notes(api, run_id)
    )
    assert lab.status()["primary.vm"] == "running"


def test_an_unanswered_approval_halts_nothing_and_ends_cancelled_not_failed(
    approving: Api, lab: LabHandle
) -> None:
    api, mark = approving, len(lab.journal())
    run_id = _failover_asking(api, timeout_seconds=3)
    # not _paused(): a 3 s pause can begin and end between two polls on a loaded machine (the
    # flake: the poll then waited 120 s for a PAUSED that had come and gone); the run's state
    # history proves it asked
    run = api.wait_final(run_id, timeout=180)
    history = api.http.get("/flow_run_states/", params={"flow_run_id": run_id})
    history.raise_for_status()
    assert "PAUSED" in [state["type"] for state in history.json()], "it never asked"
    # (Prefect's own pause timeout would have made it Failed: "never resumed")
    assert run["state"]["type"] == "CANCELLED", run["state"]
    assert run["state"]["message"].startswith("no approval within 3 s to halt primary.vm")
    assert "note: no approval within 3 s: nothing was halted or destroyed" in _notes(api, run_id)
    assert _halts(lab, mark) == 0 and lab.status()["primary.vm"] == "running"
