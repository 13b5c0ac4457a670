"""Take docs/run-form.png: the Prefect UI's run form of `dr-drill/on-demand`, in headless Chromium.

Starts a throw-away `prefect server` (SQLite in a temporary PREFECT_HOME) on loopback, registers the
catalog's deployments, points Debian's `chromium` at /deployments/deployment/<id>/run, and stops
the server. Usage: .venv/bin/python scripts/screenshot_form.py [OUT.png]
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
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYMENT = "dr-drill/on-demand"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "run-form.png").resolve()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs Debian's chromium: apt-get install chromium", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="pe-dr-screenshot-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,  # else the UI talks to port 4200
    }
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("the Prefect server did not start", file=sys.stderr)
                return 1
            time.sleep(0.5)
        register = (
            "from pe_dr.deployments.catalog import catalog\n"
            "for d in catalog():\n"
            "    d.to_deployment().apply()\n"
        )
        subprocess.run(
            [sys.executable, "-c", register],
            cwd=REPO,
            env={**env, "PREFECT_API_URL": api},
            check=True,
            timeout=120,
        )
        deployment_id = httpx.get(f"{api}/deployments/name/{DEPLOYMENT}", timeout=10).json()["id"]
        url = f"http://127.0.0.1:{port}/deployments/deployment/{deployment_id}/run"
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
                f"--user-data-dir={tmp / 'chromium'}",
                "--virtual-time-budget=30000",
                "--window-size=1280,1600",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
        print(f"run form of {DEPLOYMENT} ({url}) -> {out}")
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
