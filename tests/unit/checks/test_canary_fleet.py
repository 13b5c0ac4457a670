"""The canary drill's blast radius: the fleet's runs since the fault began, read from the primary's
PuppetDB, judged harmed when one failed or was compiled by the replica (issue 26.3)."""

from __future__ import annotations

import json

import httpx

from pe_dr.checks.canary import fleet_harm
from pe_dr.clients.pe_api import PEClient

SINCE = "2026-12-06T03:00:00.000Z"


def _run(node: str, at: str, *, status: str = "unchanged", producer: str = "primary.vm") -> dict:
    return {"certname": node, "producer_timestamp": at, "status": status, "producer": producer}


def test_reports_since_asks_for_every_node_but_the_canaries_oldest_first() -> None:
    seen: list[httpx.Request] = []
    rows = [_run("web3", "2026-12-06T03:00:09Z"), _run("web2", "2026-12-06T03:00:02Z")]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=rows)

    with PEClient(
        "primary.vm",
        host_map={"primary.vm": "192.168.50.4"},
        ca_pem=None,
        transport=httpx.MockTransport(answer),
    ) as pe:
        got = pe.reports_since(SINCE, excluding=["web1", "web0", "web1"])
    assert [r["certname"] for r in got] == ["web2", "web3"]
    (request,) = seen
    assert request.url.path == "/pdb/query/v4/reports" and request.url.port == 8081
    assert json.loads(request.url.params["query"]) == [
        "and",
        [">", "producer_timestamp", SINCE],
        ["not", ["in", "certname", ["array", ["web0", "web1"]]]],
    ]


def test_an_untouched_fleet_is_no_harm() -> None:
    runs = [
        _run("web2", "2026-12-06T03:00:02Z"),
        _run("web3", "2026-12-06T03:00:09Z", status="changed"),
    ]
    assert fleet_harm(runs, replica="replica.vm") == []


def test_a_failed_run_or_one_the_replica_served_is_harm_once_per_node() -> None:
    runs = [
        _run("web3", "2026-12-06T03:00:20Z", producer="replica.vm"),
        _run("web2", "2026-12-06T03:00:05Z", status="failed"),
        _run("web2", "2026-12-06T03:00:15Z", status="failed"),
        _run("web3", "2026-12-06T03:00:30Z", status="failed"),
        _run("web4", "2026-12-06T03:00:03Z"),
    ]
    assert fleet_harm(runs, replica="replica.vm") == [
        "web2's run at 2026-12-06T03:00:05Z failed",
        "web3's run at 2026-12-06T03:00:20Z was compiled by the replica replica.vm",
    ]
