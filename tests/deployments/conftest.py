"""Real infrastructure for the deployment tests: a private PostgreSQL 15 cluster, a `prefect server`
on loopback backed by it, and one labsim lab. Every process started here is stopped in teardown,
and every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from labsim import procfs
from labsim.testing import (
    PG_BIN,
    LabHandle,
    Postgres,
    postgres_cluster,
    running_lab,
    stop_group,
    wait_for,
)
from labsim.testing import prefect_server as running_prefect_server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POLL = "2"  # seconds: worker and runner polling, to cut dispatch latency


def group_members(pgid: int) -> list[str]:
    """The live processes of process group `pgid` (zombies have exited: not counted)."""
    members = []
    for pid, fields in procfs.live():
        if int(fields[2]) == pgid:
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                members.append(f"{pid} {command.decode()[:120]}")
    return members


def stop_like_a_service_manager(proc: subprocess.Popen[Any], timeout: float = 90) -> list[str]:
    """SIGTERM to the whole process group, then wait for ALL of it to exit (systemd's default
    KillMode=control-group), SIGKILL what is left after `timeout` (systemd's TimeoutStopSec).
    Returns what had to be killed: Prefect 3.9's worker itself sometimes does not exit on
    SIGTERM when the machine is busy."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if not group_members(proc.pid):
            break
        time.sleep(0.2)
    left = group_members(proc.pid)
    stop_group(proc, signal.SIGKILL, timeout=10)
    return left


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL 15 (Debian's package) in a private cluster owned by the postgres user."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql)")
    with postgres_cluster() as cluster:
        yield cluster


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    log: Path

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for Prefect clients, workers and flow runs against this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_LOCAL_STORAGE_PATH=str(self.home / "storage"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_RUNNER_POLL_FREQUENCY=POLL,
            PREFECT_WORKER_QUERY_SECONDS=POLL,
            PREFECT_WORKER_HEARTBEAT_SECONDS="5",
            PE_DR_HOME=str(REPO),
            PE_DR_RETRY_DELAY_SCALE="0.01",
        )
        env.update(extra)
        return env

    def prefect(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [BIN / "prefect", "--no-prompt", *args],
            cwd=REPO,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout


@contextlib.contextmanager
def prefect_server(postgres: Postgres, database: str, tmp: Path) -> Iterator[PrefectServer]:
    postgres.createdb(database)
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    server = PrefectServer("", home, tmp / "server.log")
    env = server.env(PREFECT_API_DATABASE_CONNECTION_URL=postgres.url(database))
    del env["PREFECT_API_URL"]
    with running_prefect_server(env, server.log) as api:
        server.api_url = api
        yield server


@pytest.fixture(scope="module")
def server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server per test module, each on its own PostgreSQL database."""
    tmp = tmp_path_factory.mktemp("prefect")
    with prefect_server(postgres, f"prefect_{tmp.name.replace('-', '_')}", tmp) as running:
        yield running


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    """One labsim lab for the whole session; the first drill builds it."""
    with running_lab(tmp_path_factory.mktemp("lab")) as handle:
        yield handle


def start_in_session(
    server: PrefectServer, lab: LabHandle, log: Path, *argv: str
) -> subprocess.Popen[bytes]:
    """`argv` (a command of this environment's bin/) in a session of its own, against `server`
    and `lab`, its output added to `log`."""
    with log.open("a") as out:
        return subprocess.Popen(
            [BIN / argv[0], *argv[1:]],
            cwd=REPO,
            env=server.env(**lab.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def drill_parameters(report_dir: Path, **extra: Any) -> dict[str, Any]:
    """The monthly drill's own parameters, with polling sized for labsim."""
    return {
        "parameters": {
            "confirm": ["primary.vm"],
            "promote": False,
            "poll_interval_seconds": 0.2,
            "report_dir": str(report_dir),
            **extra,
        }
    }


class Api:
    """The Prefect REST API, spoken plainly (no client settings in the test process)."""

    def __init__(self, server: PrefectServer) -> None:
        self.http = httpx.Client(base_url=server.api_url, timeout=30)

    def deployment(self, full_name: str) -> dict[str, Any]:
        response = self.http.get(f"/deployments/name/{full_name}")
        response.raise_for_status()
        return dict(response.json())

    def run(
        self,
        full_name: str,
        parameters: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {"state": {"type": "SCHEDULED"}}
        if parameters is not None:
            body["parameters"] = parameters
        if job_variables is not None:
            body["job_variables"] = job_variables
        deployment_id = self.deployment(full_name)["id"]
        response = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
        response.raise_for_status()
        return str(response.json()["id"])

    def flow_run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return dict(response.json())

    def state(self, run_id: str) -> str:
        return str(self.flow_run(run_id)["state"]["type"])

    def wait_final(self, run_id: str, timeout: float) -> dict[str, Any]:
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        run: dict[str, Any] = wait_for(
            f"flow run {run_id} to finish",
            lambda: (r := self.flow_run(run_id))["state"]["type"] in final and r,
            timeout=timeout,
        )
        return run

    def scheduled_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        response = self.http.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [deployment_id]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                "sort": "EXPECTED_START_TIME_ASC",
            },
        )
        response.raise_for_status()
        return list(response.json())

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def api(server: PrefectServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def next_first_of_month_0300_utc(now: Any) -> Any:
    """The default schedule's next run after `now` (an aware datetime)."""
    from datetime import UTC, datetime

    candidate = datetime(now.year, now.month, 1, 3, 0, tzinfo=UTC)
    if candidate <= now:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        candidate = datetime(year, month, 1, 3, 0, tzinfo=UTC)
    return candidate


def assert_monthly_runs_scheduled(api: Api, deployment_id: str) -> None:
    """The scheduler made the monthly drill's runs, the first at 03:00 UTC on the next 1st."""
    from datetime import UTC, datetime

    upcoming = wait_for(
        "the scheduler to create the monthly runs",
        lambda: api.scheduled_runs(deployment_id),
        timeout=60,
    )
    first = datetime.fromisoformat(upcoming[0]["expected_start_time"].replace("Z", "+00:00"))
    assert first == next_first_of_month_0300_utc(datetime.now(UTC))


def run_monthly_drill(api: Api, report_dir: Path) -> str:
    """The monthly deployment run by hand, seen to complete; its flow run id."""
    run_id = api.run("dr-drill/monthly", drill_parameters(report_dir))
    run = api.wait_final(run_id, timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return run_id


def statuses(journal: dict[str, Any]) -> dict[str, str]:
    """A journal's statuses: each step's by name, and each chapter's (`cached` when every step
    of it was: a Retry reused it)."""
    chapters: dict[str, set[str]] = {}
    for step in journal["steps"]:
        chapters.setdefault(step["chapter"], set()).add(step["status"])
    found = {
        c: "cached" if seen == {"cached"} else "/".join(sorted(seen))
        for c, seen in chapters.items()
    }
    found.update({step["name"]: step["status"] for step in journal["steps"]})
    return found


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[float, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append((time.time(), self.rfile.read(length).decode("utf-8", "replace")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[float, str]]]]:
    """A webhook on loopback for the notification blocks: each body it was sent, and when it
    came (time.time())."""
    received: list[tuple[float, str]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
