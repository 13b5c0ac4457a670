"""Nothing missed: `pe-dr setup --notify` makes a Prefect server notify when no drill of a lab has
passed within PE_DR_OVERDUE_DAYS (a proactive trigger: Prefect expects the drill's pass event within
the window), and when a run waits for approval. On a real server, with a window of seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.commands import run_ok

from .conftest import BIN, PrefectServer, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Prefect's shortest proactive window is 10 s; its triggers service looks every 5 s
# (PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY), and the action is sent soon after
WINDOW = 15.0
# the drilled lab's window: its pass (a process that imports Prefect, seconds on a loaded
# machine) must reach the server well inside it, or its first window ends before the pass
WINDOW_DRILLED = 45.0
BOUND = WINDOW_DRILLED + 90.0


def _run(server: PrefectServer, *command: Any, **env: str) -> str:
    return run_ok(command, env=server.env(**env), timeout=90)


BLOCK = (
    "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B\n"
    "import sys\n"
    "B(name='pe-dr-test', url=sys.argv[1], "
    "json_data={'subject': '{{subject}}', 'text': '{{body}}'})"
    ".save('drill-alerts', overwrite=True)\n"
)
# what a passed drill does at its close (flows.common): the product's own announcement
ANNOUNCE = (
    "import sys\n"
    "from prefect.events.worker import EventsWorker\n"
    "from flows.history import announce_pass\n"
    "from pe_dr.report import DrillReport\n"
    "record = DrillReport(flow='dr-drill', flow_run_id='00000000-0000-0000-0000-000000000001',"
    " lab={})\n"
    "assert announce_pass(record, lab=sys.argv[1])\n"
    "EventsWorker.drain_all()\n"
)


def _json(sent: list[tuple[float, str]]) -> list[tuple[float, dict[str, Any]]]:
    return [(at, json.loads(body)) for at, body in list(sent)]


def _overdue(sent: list[tuple[float, str]], lab: str) -> list[float]:
    return [at for at, m in _json(sent) if f"no DR drill of lab {lab} has passed" in m["subject"]]


def test_no_passed_drill_within_the_window_notifies_and_a_pass_starts_the_window_again(
    server: PrefectServer,
    tmp_path: Path,
    webhook: tuple[str, list[tuple[float, str]]],
) -> None:
    url, sent = webhook
    _run(server, BIN / "python", "-c", BLOCK, url)
    days = str(WINDOW / 86400)
    window = {"lab-quiet": WINDOW, "lab-drilled": WINDOW_DRILLED}
    made = {}
    for lab in ("lab-quiet", "lab-drilled"):
        spec = tmp_path / f"{lab}.toml"
        spec.write_text(f'name = "{lab}"\n')
        made[lab] = time.time()
        out = _run(
            server,
            BIN / "pe-dr",
            "setup",
            "--lab-spec",
            str(spec),
            "--notify",
            "drill-alerts",
            PE_DR_OVERDUE_DAYS=str(window[lab] / 86400),
        )
        assert f"automation 'pe-dr: notify when lab {lab} has no passed drill': created" in out
        assert "automation 'pe-dr: notify when a run waits for approval'" in out
    # a drill of lab-drilled passes 15 s later: its window starts again from there. 15 s, more
    # than the triggers service's 5 s period, so that a window that did not start again (its
    # notice 45 s after the set-up) cannot pass for one that did (45 s after the pass)
    time.sleep(15)
    passed = time.time()
    _run(server, BIN / "python", "-c", ANNOUNCE, "lab-drilled")

    quiet = wait_for(
        "the overdue notice of lab-quiet", lambda: _overdue(sent, "lab-quiet"), timeout=BOUND
    )
    drilled = wait_for(
        "the overdue notice of lab-drilled",
        lambda: _overdue(sent, "lab-drilled"),
        timeout=BOUND,
    )
    # no notice before its window ended: counted from the set-up, and for the drilled lab
    # from its pass (not from its set-up, 15 s earlier)
    print(  # a figure, not an assertion: how long after its window's end each notice came
        "overdue notice after the window's end: "
        f"lab-quiet {quiet[0] - made['lab-quiet'] - WINDOW:.1f} s, "
        f"lab-drilled {drilled[0] - passed - WINDOW_DRILLED:.1f} s"
    )
    assert quiet[0] >= made["lab-quiet"] + WINDOW, (quiet, made)
    assert drilled[0] >= passed + WINDOW_DRILLED, (drilled, passed)
    notice = next(m for _, m in _json(sent) if "lab-quiet" in m["subject"])
    assert notice["subject"] == "pe-dr: no DR drill of lab lab-quiet has passed for 15 s"
    assert "pe-dr history --lab lab-quiet" in notice["text"]
    assert "PE_DR_OVERDUE_DAYS" in notice["text"]
    # set up again: updated, not doubled
    out = _run(
        server,
        BIN / "pe-dr",
        "setup",
        "--lab-spec",
        str(tmp_path / "lab-quiet.toml"),
        "--notify",
        "drill-alerts",
        PE_DR_OVERDUE_DAYS=days,
    )
    assert "automation 'pe-dr: notify when lab lab-quiet has no passed drill': updated" in out


def test_a_run_waiting_for_approval_notifies(
    server: PrefectServer,
    tmp_path: Path,
    webhook: tuple[str, list[tuple[float, str]]],
) -> None:
    """A dr-drill run that pauses (it asks for approval only then: flows.approval) is told,
    with a link to its Resume form; a run of a flow that is not pe-dr's is not."""
    import httpx

    url, sent = webhook
    _run(server, BIN / "python", "-c", BLOCK, url)
    spec = tmp_path / "lab.toml"
    spec.write_text('name = "lab-asking"\n')
    _run(server, BIN / "pe-dr", "setup", "--lab-spec", str(spec), "--notify", "drill-alerts")
    time.sleep(5)  # (the triggers service loads the automation)
    with httpx.Client(base_url=server.api_url, timeout=30) as http:
        names = {}
        for flow in ("not-pe-dr", "dr-drill"):
            flow_id = http.post("/flows/", json={"name": flow}).json()["id"]
            run = http.post("/flow_runs/", json={"flow_id": flow_id, "state": {"type": "PENDING"}})
            run.raise_for_status()
            run_id, names[flow] = run.json()["id"], run.json()["name"]
            for state in ({"type": "RUNNING"}, {"type": "PAUSED", "name": "Paused"}):
                done = http.post(f"/flow_runs/{run_id}/set_state", json={"state": state})
                done.raise_for_status()
                assert done.json()["status"] == "ACCEPT", done.json()
    notice = wait_for(
        "the approval notice",
        lambda: next(
            (m for _, m in _json(sent) if "waits for your approval" in m["subject"]), None
        ),
        timeout=90,
    )
    assert notice["subject"] == f"pe-dr: dr-drill run {names['dr-drill']} waits for your approval"
    assert "press Resume, then approve or\nreject with a reason" in notice["text"]
    assert f"flow run id {run_id}" in notice["text"], notice["text"]
    # (the other run paused first: had it been told, its notice would have come first)
    assert not [m for _, m in _json(sent) if names["not-pe-dr"] in m["subject"]], sent
