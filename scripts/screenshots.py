"""Retake the docs/ screenshots of the Prefect UI (the drill's artifacts, the approval form, the
run form), in headless Chromium.

Starts a throw-away `prefect server` (SQLite in a temporary PREFECT_HOME) on loopback and one
labsim lab, runs real drills on that lab against the server (`pe-dr drill`: one that passes, one
whose primary does not go down, one that passes again) when a page wanted shows them, then shoots
each page of PAGES and stops it all. About three minutes on 2 cores (the run form alone: 30 s).

Usage: .venv/bin/python scripts/screenshots.py [NAME ...]   (default: every page of PAGES)

To add a page: write a function that takes the Scene (the server, the lab, the drills' run ids),
does what the page needs and returns the UI path to shoot, and add a Page to PAGES. A page that
fades in or sits behind a click (the approval form of a paused run, behind its Resume button)
names a text to wait for, and the button to click and what it shows then; scripts/devtools.py
drives Chromium over its DevTools protocol for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import devtools  # scripts/devtools.py, beside this one
import httpx

if TYPE_CHECKING:
    from labsim.testing import LabHandle

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = REPO / "docs"


@dataclass
class Scene:
    """What the pages are shot from."""

    api: str  # http://127.0.0.1:PORT/api
    env: dict[str, str]  # for Prefect clients and pe-dr against the server, and the lab
    lab: str  # the lab's name
    runs: dict[str, str] = field(default_factory=dict)  # drill -> flow run id
    serving: subprocess.Popen[bytes] | None = None  # `pe-dr serve`, for the approval page

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.api}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def artifact_of(self, key: str, run: str) -> str:
        """The id of artifact `key` written by flow run `run` (its latest version)."""
        found = self.post(
            "/artifacts/filter",
            {
                "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run]}},
                "sort": "CREATED_DESC",
                "limit": 1,
            },
        )
        if not found:
            raise SystemExit(f"no artifact {key} of flow run {run}")
        return str(found[0]["id"])


@dataclass(frozen=True)
class Page:
    name: str
    out: Path
    path: Callable[[Scene], str]  # prepares what the page shows; returns the UI path
    size: tuple[int, int] = (1280, 1600)
    show: str | None = None  # a text to wait for (then the page is shot over DevTools) ...
    click: str | None = None  # ... a button to click next (by its text) ...
    then_show: str | None = None  # ... and a text to wait for after it
    done: Callable[[Scene], None] | None = None  # undoes what `path` started
    drills: bool = True  # shows what the drills left (else they are not run for it)


def report_page(scene: Scene) -> str:
    """The report of the drill that failed: the verdict, what failed and what it saw first."""
    report = scene.artifact_of("dr-drill-report", scene.runs["primary-not-down"])
    return f"/artifacts/artifact/{report}"


def trend_page(scene: Scene) -> str:
    """The lab's trend after the last drill: the comparison lines and the chart."""
    key = f"dr-drill-trend-{scene.lab}"
    return f"/artifacts/artifact/{scene.artifact_of(key, scene.runs['passed-again'])}"


def history_page(scene: Scene) -> str:
    key = f"dr-drill-history-{scene.lab}"
    return f"/artifacts/artifact/{scene.artifact_of(key, scene.runs['passed-again'])}"


def approval_page(scene: Scene) -> str:
    """The Resume form of a run that asks for approval before it halts the primary (served by
    `pe-dr serve`; rejected after the shot, so nothing is halted)."""
    serve_log = Path(tempfile.mkdtemp(prefix="pe-dr-serve-")) / "serve.log"
    with serve_log.open("w") as out:
        scene.serving = subprocess.Popen(
            [BIN / "pe-dr", "serve"],
            cwd=REPO,
            env=scene.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            deployment = scene.get("/deployments/name/failover-drill/halt-primary")
            break
        except httpx.HTTPStatusError:
            if time.monotonic() > deadline or scene.serving.poll() is not None:
                tail = serve_log.read_text()[-3000:]
                raise SystemExit(f"pe-dr serve did not start:\n{tail}") from None
            time.sleep(1)
    run = scene.post(
        f"/deployments/{deployment['id']}/create_flow_run",
        {"parameters": {"parameters": {"confirm": ["primary.vm"], "approval": "ask"}}},
    )
    scene.runs["asking"] = str(run["id"])
    while scene.get(f"/flow_runs/{run['id']}")["state"]["type"] != "PAUSED":
        if time.monotonic() > deadline + 300:
            raise SystemExit("the run never asked for approval")
        time.sleep(1)
    return f"/runs/flow-run/{run['id']}"


def approval_done(scene: Scene) -> None:
    """Reject the asking run (nothing halted) and stop `pe-dr serve`."""
    run = scene.runs["asking"]
    scene.post(
        f"/flow_runs/{run}/resume",
        {
            "run_input": {
                "decision": "reject",
                "reason": "screenshot taken",
                "approver": "pe-dr screenshots",
            }
        },
    )
    deadline = time.monotonic() + 120
    final = ("CANCELLED", "FAILED", "COMPLETED")
    while scene.get(f"/flow_runs/{run}")["state"]["type"] not in final:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    if scene.serving is not None:
        os.killpg(scene.serving.pid, signal.SIGTERM)
        scene.serving.wait(60)


def run_form_page(scene: Scene) -> str:
    """The form a person fills in to run the drill by hand: the catalog's deployments registered
    as `pe-dr deployments apply` does, without a work pool."""
    register = (
        "from deployments.catalog import catalog\n"
        "for d in catalog():\n"
        "    d.to_deployment().apply()\n"
    )
    subprocess.run(
        [sys.executable, "-c", register], cwd=REPO, env=scene.env, check=True, timeout=120
    )
    deployment = scene.get("/deployments/name/dr-drill/on-demand")
    return f"/deployments/deployment/{deployment['id']}/run"


PAGES = [
    Page("report", DOCS / "report-artifact.png", report_page, (1280, 2200)),
    Page("trend", DOCS / "trend-artifact.png", trend_page, (1280, 1700)),
    Page("history", DOCS / "history-artifact.png", history_page, (1280, 800)),
    Page(
        "approval",
        DOCS / "approval-form.png",
        approval_page,
        (1280, 1000),
        show="Resume",
        click="Resume",
        then_show="Reason",
        done=approval_done,
    ),
    # the form fades in: shot once its last field shows, not when Chromium's time budget ends
    Page("run-form", DOCS / "run-form.png", run_form_page, show="RTO budget (s)", drills=False),
]

# the drills run on the lab, in order: (name, the lab's fault meanwhile, if any)
DRILLS = [
    ("passed", None),
    ("primary-not-down", "halt:ignored=primary.vm"),  # vagrant halts it, and it keeps serving
    ("passed-again", None),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    api: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the Prefect server did not start:\n{log.read_text()[-3000:]}")


def run_drills(scene: Scene, lab: LabHandle, reports: Path) -> None:
    for name, fault in DRILLS:
        started = time.monotonic()
        if fault is not None:
            lab.fault_add(fault)
        done = subprocess.run(
            [
                BIN / "pe-dr",
                "drill",
                "--spec",
                str(lab.spec_path),
                "--yes",
                "--poll-interval",
                "0.2",
                "--report-dir",
                str(reports),
            ],
            cwd=REPO,
            env=scene.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if fault is not None:
            lab.fault_clear()
        run = next(
            (line.split()[-1] for line in done.stdout.splitlines() if line.startswith(" flow run")),
            None,
        )
        if run is None or done.returncode not in (0, 1):
            raise SystemExit(f"drill {name} did not run:\n{done.stdout}\n{done.stderr}")
        scene.runs[name] = run
        verdict = "passed" if done.returncode == 0 else "failed"
        print(f"drill {name}: {verdict} in {time.monotonic() - started:.0f} s ({run})")


def shoot(chromium: str, url: str, out: Path, size: tuple[int, int], profile: Path) -> None:
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-prefers-reduced-motion",  # no fade-in caught half-way
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )


def main(argv: list[str]) -> int:
    wanted = [p for p in PAGES if not argv or p.name in argv]
    unknown = set(argv) - {p.name for p in PAGES}
    if unknown:
        print(f"no such page: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs Debian's chromium: apt-get install chromium", file=sys.stderr)
        return 2
    from labsim.testing import running_lab
    from pe_dr.lab.spec import load_spec

    tmp = Path(tempfile.mkdtemp(prefix="pe-dr-screenshots-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp / "home"),
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "home" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,  # else the UI talks to port 4200
    }
    log = tmp / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(api, server, log)
        with running_lab(tmp / "lab") as lab:
            scene = Scene(
                api=api,
                env={**env, **lab.env, "PREFECT_API_URL": api},
                lab=load_spec(lab.spec_path).name,
            )
            if any(page.drills for page in wanted):
                run_drills(scene, lab, tmp / "reports")
                said = subprocess.run(
                    [BIN / "pe-dr", "history", "--lab", scene.lab],
                    env=scene.env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=True,
                )
                print(said.stdout, end="")  # what the command line says of the same drills
            for page in wanted:
                url = f"http://127.0.0.1:{port}{page.path(scene)}"
                try:
                    if page.show is None:
                        shoot(chromium, url, page.out, page.size, tmp / "chromium")
                    else:
                        devtools.shoot(
                            url,
                            page.out,
                            show=page.show,
                            click=page.click,
                            then_show=page.then_show,
                            size=page.size,
                        )
                finally:
                    if page.done is not None:
                        page.done(scene)
                print(f"{page.name}: {url} -> {page.out.relative_to(REPO)}")
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
