"""The team-server path: `prefect deploy --all` from the committed prefect.yaml to a process work
pool, a `prefect worker`, a Prefect server on PostgreSQL, and labsim as the lab."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.lab.spec import load_spec

from ..acting import ACTING
from .conftest import (
    BIN,
    REPO,
    Api,
    PrefectServer,
    assert_monthly_runs_scheduled,
    drill_parameters,
    run_monthly_drill,
    start_in_session,
    statuses,
    stop_like_a_service_manager,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

POOL = "pe-dr-lab"


class Worker:
    """`prefect worker start` on the pool, as a team would run it; it can be stopped and started."""

    def __init__(self, server: PrefectServer, lab: LabHandle, log: Path) -> None:
        self.server, self.lab, self.log = server, lab, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        worker = ("prefect", "worker", "start", "--pool", POOL, "--prefetch-seconds", "2")
        self.proc = start_in_session(self.server, self.lab, self.log, *worker)

    def stop(self, timeout: float = 90) -> list[str]:
        """Stopped as a service manager stops it; what had to be killed after `timeout`."""
        if self.proc is None:
            return []
        left = stop_like_a_service_manager(self.proc, timeout)
        self.proc = None
        return left


@pytest.fixture(scope="module")
def worker(
    server: PrefectServer, lab: LabHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    server.prefect("work-pool", "create", POOL, "--type", "process")
    server.prefect("deploy", "--all")
    running = Worker(server, lab, tmp_path_factory.mktemp("worker") / "worker.log")
    running.start()
    try:
        yield running
    finally:
        running.stop(timeout=30)


def journal_of(report_dir: Path, run_id: str) -> dict[str, Any]:
    for path in sorted(report_dir.glob("drill-*.json")):
        data = json.loads(path.read_text())
        if data.get("flow_run_id") == run_id:
            return dict(data)
    raise AssertionError(f"no journal for flow run {run_id} in {report_dir}")


def test_the_monthly_drill_runs_on_a_worker_and_is_scheduled(
    api: Api, worker: Worker, tmp_path: Path
) -> None:
    deployment = api.deployment("dr-drill/monthly")
    assert deployment["work_pool_name"] == POOL
    assert {"pe-dr", "scheduled:monthly", "expected:success"} <= set(deployment["tags"])
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 1 * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"]

    assert_monthly_runs_scheduled(api, deployment["id"])
    run_id = run_monthly_drill(api, tmp_path)
    journal = journal_of(tmp_path, run_id)
    assert journal["status"] == "passed"
    assert journal["measurements"]["rto_seconds"] > 0


def test_a_second_drill_on_the_same_lab_waits_and_an_impatient_one_gives_up(
    api: Api, worker: Worker, lab: LabHandle, tmp_path: Path
) -> None:
    name = load_spec(lab.spec_path).name
    limit = f"pe-dr-lab-{name}"

    def holders() -> int:
        response = api.http.get(f"/v2/concurrency_limits/{limit}")
        return int(response.json()["active_slots"]) if response.status_code == 200 else 0

    # A slow halt keeps the first drill on the lab while the others ask for it.
    lab.fault_add("slow:vagrant.halt=40000")
    first = api.run("dr-drill/monthly", drill_parameters(tmp_path))
    wait_for("the first drill to hold the lab", lambda: holders() == 1, timeout=60, every=0.2)
    second = api.run("dr-drill/monthly", drill_parameters(tmp_path))
    impatient = api.run(
        "dr-drill/monthly",
        drill_parameters(tmp_path),
        job_variables={"env": {"PE_DR_LAB_LOCK_WAIT_SECONDS": "1"}},
    )

    gave_up = api.wait_final(impatient, timeout=90)
    assert gave_up["state"]["type"] == "FAILED"
    assert (
        f"another drill holds lab {load_spec(lab.spec_path).name}; gave up after 1 s"
        in (gave_up["state"]["message"])
    )
    assert api.state(first) == "RUNNING", "the impatient drill gave up while the first ran"
    lab.fault_clear()

    a = api.wait_final(first, timeout=120)
    b = api.wait_final(second, timeout=120)
    assert a["state"]["type"] == b["state"]["type"] == "COMPLETED", (a["state"], b["state"])
    # pre-flight only reads, before the lock (it says who holds the lab); the rest waits for it
    steps_a = journal_of(tmp_path, first)["steps"]
    # the roles and pre-flight only read the lab, before the lock: what acts comes after it
    looks = {"lab-roles", "pre-flight"}
    steps_b = [s for s in journal_of(tmp_path, second)["steps"] if s["name"] not in looks]
    assert steps_a and steps_b
    assert steps_b[0]["started_at"] >= steps_a[-1]["ended_at"], "the drills overlapped on the lab"
    said = _logs_of(api, second)
    waiting = [m for m in said if m.startswith(f"waiting for lab {name}: held by flow run {first}")]
    assert waiting, said[:20]
    assert " since " in waiting[0]


def test_a_failing_drill_sends_the_notification(
    server: PrefectServer,
    api: Api,
    worker: Worker,
    lab: LabHandle,
    webhook: tuple[str, list[tuple[float, str]]],
) -> None:
    url, received = webhook
    block = (
        "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B\n"
        "import sys\n"
        "B(name='pe-dr-test', url=sys.argv[1], "
        "json_data={'subject': '{{subject}}', 'text': '{{body}}'}).save("
        "'drill-alerts', overwrite=True)\n"
    )
    env = server.env(**lab.env)
    for command in (
        [BIN / "python", "-c", block, url],
        [BIN / "pe-dr", "setup", "--notify", "drill-alerts"],
        [BIN / "pe-dr", "setup", "--notify", "custom-webhook/drill-alerts"],  # idempotent
    ):
        done = subprocess.run(
            command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "automation 'pe-dr: notify when a DR drill fails': updated" in done.stdout

    # promote without the primary in `confirm` fails at once, before touching the lab
    run_id = api.run("dr-drill/on-demand", {"parameters": {"promote": True}})
    run = api.wait_final(run_id, timeout=90)
    assert run["state"]["type"] == "FAILED"
    message = wait_for(
        "the failure notification",
        lambda: next((m for _, m in received if run["name"] in m), None),
        timeout=60,
    )
    assert "Failed" in message


def test_prefect_flow_run_retry_resumes_a_failed_run_on_the_worker(
    server: PrefectServer, api: Api, worker: Worker, lab: LabHandle, tmp_path: Path
) -> None:
    lab.fault_add("fail:git.push")
    run_id = api.run("dr-drill/monthly", drill_parameters(tmp_path))
    failed = api.wait_final(run_id, timeout=180)
    assert failed["state"]["type"] == "FAILED", failed["state"]
    lab.fault_clear()
    mark = len(lab.journal())

    server.prefect("flow-run", "retry", run_id)
    wait_for(
        "the worker to take the retry", lambda: api.state(run_id) != "FAILED", timeout=30, every=0.2
    )
    run = api.wait_final(run_id, timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["run_count"] >= 2, "the same flow run ran again"

    journals = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("drill-*.json"))]
    mine = [j for j in journals if j["flow_run_id"] == run_id]
    assert [j["status"] for j in mine] == ["failed", "passed"]
    status = statuses(mine[-1])
    for done in ("lab-setup", "code-manager-setup", "replica-activation", "health-gate"):
        assert status[done] == "cached", (done, status)
    assert status["check-replication"] == "completed"
    again = lab.journal()[mark:]
    assert [e for e in again if e["op"] in ACTING] == [], "completed steps did not act again"
    assert any(e["op"] == "git.push" for e in again), "the failed step ran again"


def test_cancelling_a_run_stops_the_commands_it_started(
    server: PrefectServer, api: Api, worker: Worker, lab: LabHandle, tmp_path: Path
) -> None:
    stand_in = str(lab.state_dir / "bin" / "vagrant")

    def vagrant_halts() -> list[str]:
        found = subprocess.run(
            ["pgrep", "-f", f"{stand_in} halt"], capture_output=True, text=True, check=False
        )
        return found.stdout.split()

    lab.fault_add("slow:vagrant.halt=30000")  # 30 s of halting, scaled
    try:
        run_id = api.run(
            "failover-drill/halt-primary",
            {"parameters": {"confirm": ["primary.vm"], "poll_interval_seconds": 0.2}},
        )
        wait_for("the drill to be halting the primary", vagrant_halts, timeout=120, every=0.2)
        server.prefect("flow-run", "cancel", run_id)
        run = api.wait_final(run_id, timeout=90)
        assert run["state"]["type"] == "CANCELLED", run["state"]
        wait_for(
            "the vagrant command to be gone", lambda: not vagrant_halts(), timeout=30, every=0.2
        )
    finally:
        lab.fault_clear()
        # The VM finishes halting without its vagrant client, as VirtualBox would: start it again.
        wait_for(
            "the primary to finish halting",
            lambda: lab.status()["primary.vm"] != "running",
            timeout=90,
            every=0.5,
        )
        subprocess.run(
            [stand_in, "up", "primary.vm"],
            env={**os.environ, **lab.env},
            capture_output=True,
            timeout=120,
            check=True,
        )


def test_stopping_the_worker_mid_failover_leaves_a_retryable_run_that_resumes(
    server: PrefectServer, api: Api, worker: Worker, lab: LabHandle, tmp_path: Path
) -> None:
    """SIGTERM to the worker's process group (what a service manager sends) while the drill has
    the primary down: the run ends Cancelled or Crashed, never Running; the primary runs again;
    `prefect flow-run retry` on a worker started again resumes with the set-up cached."""
    # The halt takes 3 s more and the agent fault goes in once it began: a loaded machine let
    # the drill finish the failover before the test reacted to the halt, and the Retry then
    # reused that completed failover.
    lab.fault_add("slow:vagrant.halt=3000")
    run_id = api.run("dr-drill/monthly", drill_parameters(tmp_path))
    mark = len(lab.journal())

    def reached(op: str, detail: str = "") -> bool:
        return any(
            e["op"] == op and e["outcome"] == "ok" and e["detail"].startswith(detail)
            for e in lab.journal()[mark:]
        )

    wait_for(
        "the drill to halt the primary",
        lambda: reached("vagrant.command", "halt primary.vm"),
        timeout=240,
        every=0.2,
    )
    lab.fault_add("fail:puppet.agent@linux.vm")  # the failover wait cannot end by itself
    wait_for("the halt to end", lambda: reached("vagrant.halt"), timeout=60, every=0.2)
    try:
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGTERM)  # the service manager's stop
        try:
            stopped = api.wait_final(run_id, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(_last_logs(api))) from None
        worker.stop(timeout=30)  # and its kill of what is left after the stop timeout
        assert stopped["state"]["type"] in {"CANCELLED", "CRASHED"}, stopped["state"]
        assert lab.status()["primary.vm"] == "running", (
            "the stopped drill started the primary:\n" + ("\n".join(_last_logs(api, 60)))
        )
    finally:
        lab.fault_clear()
        worker.start()
    mark = len(lab.journal())
    server.prefect("flow-run", "retry", run_id)
    run = api.wait_final(run_id, timeout=240)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    last = [j for j in _journals(tmp_path) if j["flow_run_id"] == run_id][-1]
    status = statuses(last)
    for done in ("lab-setup", "code-manager-setup", "replica-activation", "replication-check"):
        assert status[done] == "cached", (done, status)
    assert [e["op"] for e in lab.journal()[mark:]].count("vagrant.halt") == 1


def _journals(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("drill-*.json"))]


def _last_logs(api: Api, limit: int = 40) -> list[str]:
    response = api.http.post("/logs/filter", json={"sort": "TIMESTAMP_DESC", "limit": limit})
    return [f"{log['timestamp']} {log['message'][:200]}" for log in reversed(response.json())]


def _logs_of(api: Api, run_id: str) -> list[str]:
    response = api.http.post(
        "/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200},
    )
    response.raise_for_status()
    return [str(log["message"]) for log in response.json()]


def test_pe_dr_history_reads_every_drill_from_the_server_on_postgresql(
    server: PrefectServer, api: Api, worker: Worker, lab: LabHandle, tmp_path: Path
) -> None:
    """After the drills above (passed, failed, retried after a failure and after a stop): one
    row per drill that closed, with the verdict of its latest report; a retried drill once."""
    name = load_spec(lab.spec_path).name

    def reports() -> dict[str, str]:
        """Each flow run's latest dr-drill-report verdict (its description: 'dr-drill passed')."""
        response = api.http.post(
            "/artifacts/filter",
            json={
                "artifacts": {"key": {"any_": ["dr-drill-report"]}},
                "sort": "CREATED_DESC",
                "limit": 200,
            },
        )
        response.raise_for_status()
        latest: dict[str, str] = {}
        for artifact in response.json():
            flow, _, verdict = str(artifact["description"]).partition(" ")
            if flow == "dr-drill":
                latest.setdefault(str(artifact["flow_run_id"]), verdict)
        return latest

    if not reports():  # this test alone: one drill to read back
        run_id = api.run("dr-drill/monthly", drill_parameters(tmp_path))
        assert api.wait_final(run_id, timeout=180)["state"]["type"] == "COMPLETED"
    expected = reports()
    done = subprocess.run(  # (the chart is drawn from the same rows: tests/flows draws it)
        [BIN / "pe-dr", "history", "--lab", name],
        cwd=REPO,
        env=server.env(**lab.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("  20")]
    assert {row[4] for row in rows} == {"drill"}, done.stdout  # the kind column
    shown = {row[3]: row[5] for row in rows}  # flow run id (first 8) -> verdict
    assert len(rows) == len(expected), done.stdout
    assert shown == {run[:8]: verdict for run, verdict in expected.items()}, done.stdout
    retried = [r for r in expected if api.flow_run(r)["run_count"] >= 2]
    if len(expected) > 1:
        assert retried, "the drills above retried a run"
    for run in retried:
        assert shown[run[:8]] == "passed" == expected[run]
    # runs that never began the drill (the impatient one above gave up at the lab's lock, before
    # any step acted) are listed apart, not counted as drills
    apart = re.search(r"not drills \((\d+):", done.stdout)
    began = len(expected) - (int(apart.group(1)) if apart else 0)
    assert f"history  {began} drill" in done.stdout
    assert "trend  RTO " in done.stdout
