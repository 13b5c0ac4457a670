"""Only drills count: on one lab, a run refused at pre-flight, a run whose approval was rejected
and a drill that passed leave a history (table, trend and summary) of one drill, the other two
listed apart; the passed drill announces its pass (what the overdue automation waits for)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.lab.spec import load_spec
from tests.commands import run_ok

from .conftest import BIN, Api, PrefectServer, drill_parameters, wait_for
from .test_serve import pe_dr_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def serving(
    server: PrefectServer, api: Api, lab: LabHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("history-serve")
    with pe_dr_serve(server, lab, tmp / "serve.log"):
        wait_for(
            "pe-dr serve to register the drills",
            lambda: api.deployment("dr-drill/on-demand"),
            timeout=60,
        )
        yield api


def _pe_dr(server: PrefectServer, lab: LabHandle, *args: str) -> str:
    return run_ok([BIN / "pe-dr", *args], env=server.env(**lab.env))


def run_of(api: Api, run_id: str) -> dict[str, Any]:
    return api.flow_run(run_id)


def _moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _answer(api: Api, run_id: str, **answer: str) -> None:
    wait_for(
        f"flow run {run_id} to ask for approval",
        lambda: api.flow_run(run_id)["state"]["type"] == "PAUSED",
        timeout=300,
    )
    response = api.http.post(f"/flow_runs/{run_id}/resume", json={"run_input": answer})
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def _rows(out: str, heading: str) -> list[str]:
    """The table's rows under the line that starts with `heading` (up to the next blank line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.strip())
    return rows


def test_a_refused_run_and_a_rejected_approval_are_listed_apart_from_the_one_drill(
    server: PrefectServer, serving: Api, lab: LabHandle, tmp_path: Path
) -> None:
    api = serving
    name = load_spec(lab.spec_path).name
    # refused at pre-flight: the run does not name the primary it would halt
    refused = api.run("dr-drill/on-demand", drill_parameters(tmp_path, confirm=[]))
    run = api.wait_final(refused, timeout=120)
    assert run["state"]["type"] == "FAILED", run["state"]

    # approval asked and rejected
    asking = api.run(
        "dr-drill/on-demand",
        drill_parameters(tmp_path, approval="ask", approval_timeout_seconds=300),
    )
    _answer(api, asking, decision="reject", reason="change freeze", approver="Ana Ops")
    run = api.wait_final(asking, timeout=120)
    assert run["state"]["type"] == "CANCELLED", run["state"]

    # a drill that passes, approved
    passed = api.run(
        "dr-drill/on-demand",
        drill_parameters(tmp_path, approval="ask", approval_timeout_seconds=300),
    )
    _answer(api, passed, decision="approve", reason="monthly drill window", approver="Ana  Ops")
    run = api.wait_final(passed, timeout=300)
    assert run["state"]["type"] == "COMPLETED", run["state"]

    out = _pe_dr(server, lab, "history", "--lab", name, "--chart", str(tmp_path / "trend.svg"))
    assert f"history  1 drill of lab {name} since " in out and ": 1 passed" in out, out
    drills = _rows(out, "date")
    assert len(drills) == 1 and passed[:8] in drills[0], out
    assert " drill passed " in " ".join(drills[0].split()), out
    apart = _rows(out, "not drills (2: refused at pre-flight or called off before it began)")
    assert len(apart) == 3, out  # its heading and two rows
    assert any(refused[:8] in row and " failed " in row for row in apart[1:]), out
    assert any(asking[:8] in row and " cancelled " in row for row in apart[1:]), out
    assert "trend  RTO " in out and "the first drill on record to measure it" in out, out

    # the trend artifact the drill published speaks of one drill too
    response = api.http.post(
        "/artifacts/latest/filter",
        json={"artifacts": {"key": {"any_": [f"dr-drill-trend-{name}"]}}},
    )
    response.raise_for_status()
    (trend,) = response.json()
    assert f"1 drill of lab {name} since" in trend["data"], trend["data"][:300]
    assert trend["flow_run_id"] == passed

    # and announced its pass, the event the overdue automation expects
    events: list[dict[str, Any]] = wait_for(
        "the pass event",
        lambda: api.http.post(
            "/events/filter",
            json={"filter": {"event": {"name": ["pe-dr.drill.passed"]}}, "limit": 50},
        ).json()["events"],
        timeout=60,
    )
    assert [
        (e["resource"]["prefect.resource.id"], e["payload"]["flow_run_id"]) for e in events
    ] == [(f"pe-dr.lab.{name}", passed)]

    # a drill that fails, then the auditors' page of the approved one, from this server
    lab.fault_add("fail:git.push")
    try:
        failed = api.run("dr-drill/on-demand", drill_parameters(tmp_path))
        run = api.wait_final(failed, timeout=300)
        assert run["state"]["type"] == "FAILED", run["state"]
    finally:
        lab.fault_clear()
    page = tmp_path / "drill.html"
    said = _pe_dr(server, lab, "report", passed, "--html", str(page))
    assert f"report  {page} (passed)" in said
    html = page.read_text()
    assert "<p id='verdict' class='passed'><strong>PASSED</strong>" in html
    (approval,) = re.findall(r"<tr data-decision='[^']*'>.*?</tr>", html)
    cells = re.findall(r"<td>(.*?)</td>", approval)
    assert cells[:3] == [
        "Approve this run to halt primary.vm to prove failover?",
        "approve",
        "monthly drill window",
    ], approval
    assert cells[4] == "Ana Ops", approval  # the name typed on the form: the server keeps none
    (when,) = re.findall(r"datetime='([^']+)'", approval)
    started, ended = (run_of(api, passed)[k] for k in ("start_time", "end_time"))
    assert _moment(started) <= _moment(when) <= _moment(ended), (started, when, ended)
    assert f"<p id='negative'><code>{failed}</code>" in html
    assert "<strong class='failed'>FAILED</strong>" in html.split("id='negative'")[1]
    assert "<svg" in html, "the lab's trend chart"
