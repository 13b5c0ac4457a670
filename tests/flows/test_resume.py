"""Resume: a Retry of the same run skips completed steps, and the lab is always left whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle, alive, process_tree
from pe_dr.report import DrillReport

from ..acting import ACTING

pytestmark = pytest.mark.slow

Drill = Callable[..., tuple[bool, DrillReport]]
Ops = Callable[..., list[dict[str, Any]]]


def test_retry_runs_only_the_failed_step_and_those_after_it(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    from flows import journal
    from pe_dr_cli.main import main

    built.fault_add("fail:git.push")
    ok, first = run_drill(tmp_path)
    assert not ok
    assert [s.name for s in first.steps if s.status == "failed"] == ["check-replication"]
    built.fault_clear()
    mark = len(built.journal())

    assert main(["retry", first.flow_run_id]) == 0
    second = journal.returned(first.flow_run_id)
    assert second is not None and second.status == "passed", second and second.to_dict()
    assert second.flow_run_id == first.flow_run_id, "a Retry continues the same run"
    # the run's report in the UI is the passed attempt's: the UI lists a run's artifacts by
    # their (random) ids, so the failed attempt's was as likely listed first (24.4)
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(first.flow_run_id)])
            )
        )
    reports = [str(a.data) for a in artifacts if a.key == "dr-drill-report"]
    assert len(reports) == 1 and reports[0].startswith("# DR drill PASSED"), reports
    status = {(s.chapter, s.name): s.status for s in second.steps}
    set_up = ("lab-setup", "code-manager-setup", "primary-and-replica-settings")
    done = [key for key in status if key[0] in {*set_up, "replica-activation"}]
    assert len(done) >= 20, status
    for key in [*done, ("dr-drill", "health-gate")]:
        assert status[key] == "cached", (key, status)
    for redone in ("check-replication", "halt-primary", "measure-failover", "measure-failback"):
        chapter = "replication-check" if redone == "check-replication" else "failover-drill"
        assert status[(chapter, redone)] == "completed", (redone, status)

    again = built.journal()[mark:]
    assert [e for e in again if e["op"] in ACTING] == [], "completed steps did not act again"
    assert [e for e in again if e["op"] == "vagrant.up" and e["vm"] != "primary.vm"] == []
    assert journal_ops(built, "git.push", mark), "the failed step ran again"
    assert len(journal_ops(built, "vagrant.halt", mark)) == 1, "and the steps after it"


def test_a_retry_after_a_failed_replication_check_measures_a_push_of_its_own(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    """The drill's headline promise: once the cause is fixed, Retry passes, measuring a commit
    it really pushed (the same marker again pushed nothing, deployed nothing, failed forever);
    and a run that passed is not retried, from the command line nor as the UI's Retry does."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled
    from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs

    from flows import journal
    from flows.registry import FLOWS
    from pe_dr_cli.main import main

    built.fault_add("replication:broken")
    ok, first = run_drill(tmp_path)
    assert not ok
    assert [s.name for s in first.steps if s.status == "failed"] == ["check-replication"]
    (failed,) = [c for c in first.checks if c["name"] == "replication"]
    one = failed["evidence"]["commit"]  # type: ignore[index]
    built.fault_clear()
    mark = len(built.journal())

    assert main(["retry", first.flow_run_id]) == 0
    second = journal.returned(first.flow_run_id)
    assert second is not None and second.status == "passed", second and second.to_dict()
    (check,) = [c for c in second.checks if c["name"] == "replication"]
    evidence: dict[str, Any] = check["evidence"]  # type: ignore[assignment]
    two = evidence["commit"]
    assert two != one, "the Retry committed a change of its own"
    assert evidence["attempt"] == 2
    assert evidence["earlier_attempts"] == [{"attempt": 1, "commit": one}]
    assert f"earlier: {one[:11]} (attempt 1)" in str(check["detail"])
    deployed = [e["detail"] for e in journal_ops(built, "code-manager.deploy", mark)]
    assert any(two in d for d in deployed), ("the push made a deploy of the new commit", deployed)
    synced = [e for e in journal_ops(built, "filesync", mark) if e["outcome"] == "ok"]
    assert any(two in e["detail"] for e in synced), "and it is the commit the replica received"

    # a run that passed is not retried: one sentence, exit 2 ...
    assert main(["retry", first.flow_run_id]) == 2
    # ... and when the UI's Retry schedules it anyway, pre-flight refuses before anything acts
    run_id = UUID(first.flow_run_id)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Scheduled(name="AwaitingRetry"), force=True)
        run = client.read_flow_run(run_id)
    flow = FLOWS["dr-drill"]
    parameters = get_call_parameters(flow.fn, *parameters_to_args_kwargs(flow.fn, run.parameters))
    mark = len(built.journal())
    state = run_flow(flow=flow, flow_run=run, parameters=parameters, return_type="state")
    assert state.is_failed()
    assert "already passed" in str(state.message), state.message
    changes = ACTING | {"vagrant.halt", "vagrant.up", "git.push", "code-manager.deploy"}
    touched = [e for e in built.journal()[mark:] if e["op"] in changes]
    assert touched == [], "nothing touched the lab"


def test_a_new_run_does_everything_again(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    mark = len(built.journal())
    ok, report = run_drill(tmp_path)
    assert ok
    assert not [s for s in report.steps if s.status == "cached" and s.name != "ensure-admin-token"]
    # every step ran again and looked at the lab (code already deployed: it read Code Manager)
    reads = [
        e for e in journal_ops(built, "api.code-manager", mark) if "deploys/status" in e["detail"]
    ]
    assert reads, "a new run looks again"


def test_a_failed_failover_check_leaves_the_primary_running(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("fail:puppet.agent@linux.vm")
    ok, report = run_drill(tmp_path, flow="failover_drill", budgets={"rto_seconds": 2.0})
    assert not ok
    failed = [c for c in report.checks if not c["passed"]]
    assert [c["name"] for c in failed] == ["failover"]
    assert "not compiled by replica.vm within 2 s" in str(failed[0]["detail"])
    assert any("started it again" in n for n in report.notes), report.notes
    assert built.status()["primary.vm"] == "running"
    # the restart is a task of its own, run by the failover transaction's rollback
    steps = [(s.name, s.status) for s in report.steps]
    failover_at = steps.index(("measure-failover", "failed"))
    assert steps[failover_at + 1] == ("start-primary-again", "completed"), steps


@pytest.mark.timeout(600)
def test_a_drill_killed_mid_failover_is_retried_and_restores_the_primary_first(
    built: LabHandle, tmp_path: Path, prefect_home: Path
) -> None:
    env = {**os.environ, **built.env, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "pe_dr_cli.main"]
    # The halt takes 3 s more: time for this test to read the line that precedes it and break
    # the failover wait before the drill gets there (a loaded machine once let it finish first).
    built.fault_add("slow:vagrant.halt=3000")
    drill = subprocess.Popen(
        [*cli, "drill", "--yes", "--poll-interval", "0.1", "--report-dir", str(tmp_path / "r")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    run_id, seen, deadline = None, [], time.monotonic() + 240
    try:
        assert drill.stdout is not None
        for line in drill.stdout:
            seen.append(line)
            if line.startswith("flow run") and run_id is None:
                run_id = line.split()[2]
            if "completed  check-failover-ready" in line:
                built.fault_add("fail:puppet.agent@linux.vm")  # the failover wait cannot end
            if "completed  check-primary-down" in line or time.monotonic() > deadline:
                break
    finally:
        os.killpg(drill.pid, signal.SIGKILL)
        drill.wait(timeout=30)
    assert run_id and "completed  check-primary-down" in seen[-1], "".join(seen)
    gone_by = time.monotonic() + 15  # killed processes are reaped by init, not at once
    while True:
        left = subprocess.run(
            ["pgrep", "-s", str(drill.pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not left or time.monotonic() > gone_by:
            break
        time.sleep(0.2)
    assert left == "", "nothing of the killed drill (nor its Prefect server) is left"
    assert built.status()["primary.vm"] == "poweroff", "the kill left the primary down"
    built.fault_clear()

    retry = subprocess.run(
        [*cli, "retry", run_id, "--force"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr
    lines = retry.stdout.splitlines()
    first_step = next(i for i, ln in enumerate(lines) if "restore-primary" in ln)
    assert "started it again" in retry.stdout
    assert all("halt-primary" not in ln for ln in lines[:first_step]), "restore comes first"
    # the killed attempt's lab lock (its local server, and so its lease, died with it) is freed
    assert f"held by flow run {run_id}" in retry.stdout
    assert "but it was attempt 1 of this same run, which is now attempt 2: freed it" in (
        retry.stdout
    )
    assert "cached  code-manager-setup" in retry.stdout
    assert "completed  halt-primary" in retry.stdout, retry.stdout
    assert "completed  measure-failover" in retry.stdout, retry.stdout
    assert "cached  measure-failover" not in retry.stdout, retry.stdout
    assert "PASSED" in retry.stdout
    assert built.status()["primary.vm"] == "running"


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("sig", "phase"),
    [(signal.SIGINT, "failback"), (signal.SIGTERM, "failover")],
    ids=["sigint-in-failback", "sigterm-in-failover"],
)
def test_a_signal_to_the_drill_mid_failover_stops_it_cleanly_and_retry_completes(
    built: LabHandle, tmp_path: Path, prefect_home: Path, sig: signal.Signals, phase: str
) -> None:
    """SIGTERM while the primary is down, or Ctrl-C (SIGINT to the whole process group) while
    the drill waits for failback: exit 143/130, the primary running, the journal written, no run
    left Running, nothing left behind (Prefect's temporary server included), and `pe-dr retry`
    completes without --force, measuring the failover again (the stopped attempt's RTO is not
    reused: its transaction was rolled back)."""
    import sqlite3
    import threading

    env = {**os.environ, **built.env, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "pe_dr_cli.main"]
    reports = tmp_path / "r"
    mark = len(built.journal())
    # The halt (or the restart) takes 3 s more, and the agent fault goes in once it began: with a
    # fast failover the drill once got past the wait before the test put the fault in.
    slowed = "vagrant.halt" if phase == "failover" else "vagrant.up"
    built.fault_add(f"slow:{slowed}=3000")
    drill = subprocess.Popen(
        [*cli, "drill", "--yes", "--poll-interval", "0.1", "--report-dir", str(reports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    assert drill.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(drill.stdout or []), daemon=True)
    reader.start()
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 300

        def wait_for(op: str, detail: str = "", outcome: str = "ok") -> None:
            while not any(
                e["op"] == op and e["outcome"] == outcome and e["detail"].startswith(detail)
                for e in built.journal()[mark:]
            ):
                assert drill.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, f"the drill never got to {op} {detail}"
                time.sleep(0.1)

        if phase == "failover":
            wait_for("vagrant.command", "halt primary.vm")
            built.fault_add("fail:puppet.agent@linux.vm")  # the failover wait cannot end
            wait_for("vagrant.halt")
        else:
            wait_for("vagrant.halt")
            wait_for("vagrant.command", "up primary.vm")
            built.fault_add("fail:puppet.agent@linux.vm")  # the failback wait cannot end
            wait_for("puppet.agent", outcome="fault")  # measure-failback is waiting
        tree = process_tree(drill.pid)
        assert len(tree) > 1, "Prefect's temporary server runs below the drill"
        os.killpg(drill.pid, sig)
        code = drill.wait(timeout=120)
    finally:
        if drill.poll() is None:
            os.killpg(drill.pid, signal.SIGKILL)
            drill.wait(timeout=30)
        reader.join(timeout=30)
    out = "".join(lines)
    assert code == 128 + sig, out
    assert f"STOPPED by {'SIGINT (Ctrl-C)' if sig == signal.SIGINT else 'SIGTERM'}" in out, out
    assert "Traceback" not in out, out
    # one signal, one line: the stop was once reported again by each part that met it (24.4)
    assert "already stopping" not in out, out
    assert built.status()["primary.vm"] == "running", "the stopped drill started the primary"

    gone_by = time.monotonic() + 30
    while alive(tree) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not alive(tree), f"processes left behind: {alive(tree)}"
    session = subprocess.run(
        ["pgrep", "-s", str(drill.pid)], capture_output=True, text=True, check=False
    )
    assert session.stdout.strip() == "", "nothing of the drill's session is left"

    (journal,) = [json.loads(p.read_text()) for p in reports.glob("drill-*.json")]
    assert journal["status"] == "interrupted", journal["status"]
    assert journal["interrupted"].startswith("SIGINT" if sig == signal.SIGINT else "SIGTERM")
    # Wherever in the failover the signal landed (on a loaded machine the drill may be past the
    # RTO wait, or between two steps), the step under way is journaled interrupted, and the
    # failover's rollback then ran start-primary-again, which started the primary if it was down.
    stopped_by = "SIGINT (Ctrl-C)" if sig == signal.SIGINT else "SIGTERM"
    steps = [(s["name"], s["status"]) for s in journal["steps"]]
    assert steps[-1] == ("start-primary-again", "completed"), steps[-6:]
    under_way, status = steps[-2]
    if phase == "failback":
        assert (under_way, status) == ("measure-failback", "interrupted"), steps[-6:]
        assert ("measure-failover", "completed") in steps, steps
    failover = {
        "halt-primary",
        "check-primary-down",
        "check-replica-serves",
        "measure-failover",
        "start-primary",
    }
    assert under_way in failover | {"measure-failback"}, steps[-6:]
    assert status == "interrupted" or (status == "completed" and under_way != "measure-failback")
    assert [name for name, st in steps if st == "interrupted"] in ([under_way], []), steps
    # (a start-primary cut short may or may not have booted the primary already)
    was_down = under_way in failover - {"start-primary"}
    said = (
        f"was stopped by {stopped_by} while primary.vm was down; started it again"
        if was_down
        else f"was stopped by {stopped_by}"
    )
    assert any(said in n for n in journal["notes"]), (said, journal["notes"])
    run_id = journal["flow_run_id"]
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        root = db.execute("select state_type from flow_run where id = ?", (run_id,)).fetchone()
        running = db.execute(
            "select count(*) from flow_run where state_type in ('RUNNING', 'PENDING')"
        ).fetchone()[0]
        running += db.execute(
            "select count(*) from task_run where state_type in ('RUNNING', 'PENDING')"
        ).fetchone()[0]
    assert root is not None and root[0] in {"CRASHED", "CANCELLED"}, root
    assert running == 0, "no flow or task run is left Running"
    built.fault_clear()
    if sig != signal.SIGINT:
        return  # the retry after a Ctrl-C is the one the user meets; once is enough

    retry = subprocess.run(
        [*cli, "retry", run_id], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "cached  code-manager-setup" in retry.stdout
    assert "PASSED" in retry.stdout
    assert built.status()["primary.vm"] == "running"


def test_retry_usage_errors(capsys: pytest.CaptureFixture[str], prefect_server: None) -> None:
    from pe_dr_cli.main import main

    assert main(["retry", "not-a-uuid"]) == 2
    assert "is not a flow run id" in capsys.readouterr().err
    assert main(["retry", "00000000-0000-4000-8000-000000000000"]) == 2
    assert "no flow run" in capsys.readouterr().err
