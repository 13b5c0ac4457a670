"""PEClient against httpx.MockTransport: Code Manager, the orchestrator, status and PuppetDB,
each request as PE documents it, each answer parsed."""

from __future__ import annotations

import json

import httpx
import pytest

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import ApiError

from .fake_pe import TOKEN, FakePE, sent

# --- Code Manager ---------------------------------------------------------------------------------


def test_deploy_waits_with_a_longer_read_timeout(fake: FakePE, pe: PEClient) -> None:
    answer = [
        {
            "environment": "production",
            "id": 3,
            "status": "complete",
            "deploy-signature": "4d3c0a1e2f",
            "file-sync": {"environment-commit": "a", "code-commit": "b"},
        }
    ]
    fake.on("POST", 8170, "/code-manager/v1/deploys", httpx.Response(200, json=answer))
    assert pe.deploy(["production"]) == answer
    sent(fake, "POST", "https://primary.vm:8170/code-manager/v1/deploys")
    assert fake.last_json() == {"environments": ["production"], "wait": True}
    assert fake.last.extensions["timeout"]["read"] == 600.0
    assert fake.last.extensions["timeout"]["connect"] == 30.0


def test_deploy_without_wait(fake: FakePE, pe: PEClient) -> None:
    answer = [{"environment": "production", "id": 4, "status": "queued"}]
    fake.on("POST", 8170, "/code-manager/v1/deploys", httpx.Response(200, json=answer))
    assert pe.deploy(["production"], wait=False) == answer
    assert fake.last_json() == {"environments": ["production"], "wait": False}
    assert fake.last.extensions["timeout"]["read"] == 30.0


def test_deploys_status(fake: FakePE, pe: PEClient) -> None:
    status = {
        "deploys-status": {"new": [], "queued": [], "deploying": [], "failed": []},
        "file-sync-client-status": {"all-synced": True, "file-sync-clients": {}},
    }
    fake.on("GET", 8170, "/code-manager/v1/deploys/status", httpx.Response(200, json=status))
    assert pe.deploys_status() == status
    sent(fake, "GET", "https://primary.vm:8170/code-manager/v1/deploys/status")


def test_code_manager_not_configured_is_permanent(fake: FakePE, pe: PEClient) -> None:
    # no route: the fake answers 404
    with pytest.raises(ApiError) as caught:
        pe.deploys_status()
    assert caught.value.status == 404
    assert str(caught.value).startswith("Code Manager on primary.vm:8170 answered HTTP 404")


# --- orchestrator -------------------------------------------------------------------------------

JOB_ANSWER = {
    "job": {"id": "https://primary.vm:8143/orchestrator/v1/jobs/81", "name": "81"},
}


def test_run_puppet_by_query(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 8143, "/orchestrator/v1/command/deploy", httpx.Response(202, json=JOB_ANSWER))
    query = "nodes {deactivated is null and expired is null}"
    assert pe.run_puppet(query=query, description="pe-dr drill") == "81"
    sent(fake, "POST", "https://primary.vm:8143/orchestrator/v1/command/deploy")
    assert fake.last_json() == {
        "environment": "",
        "enforce_environment": False,
        "noop": False,
        "scope": {"query": query},
        "description": "pe-dr drill",
    }


def test_run_puppet_on_nodes(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 8143, "/orchestrator/v1/command/deploy", httpx.Response(202, json=JOB_ANSWER))
    assert (
        pe.run_puppet(
            nodes=["linux.vm"], environment="production", enforce_environment=True, noop=True
        )
        == "81"
    )
    assert fake.last_json() == {
        "environment": "production",
        "enforce_environment": True,
        "noop": True,
        "scope": {"nodes": ["linux.vm"]},
    }


def test_run_puppet_needs_exactly_one_scope(pe: PEClient) -> None:
    with pytest.raises(ValueError):
        pe.run_puppet()
    with pytest.raises(ValueError):
        pe.run_puppet(query="nodes {}", nodes=["a"])


def test_run_puppet_in_an_unknown_environment(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        8143,
        "/orchestrator/v1/command/deploy",
        httpx.Response(
            404, json={"kind": "puppetlabs.orchestrator/unknown-environment", "msg": "nope"}
        ),
    )
    with pytest.raises(ApiError) as caught:
        pe.run_puppet(nodes=["linux.vm"], environment="nope")
    assert caught.value.kind == "puppetlabs.orchestrator/unknown-environment"


def test_job_and_job_nodes(fake: FakePE, pe: PEClient) -> None:
    job = {"name": "81", "state": "finished", "node_count": 2}
    items = [{"name": "linux.vm", "state": "finished", "result": {"status": "changed"}}]
    fake.on("GET", 8143, "/orchestrator/v1/jobs/81", httpx.Response(200, json=job))
    fake.on(
        "GET",
        8143,
        "/orchestrator/v1/jobs/81/nodes",
        httpx.Response(200, json={"items": items, "next-events": {}}),
    )
    assert pe.job("81") == job
    sent(fake, "GET", "https://primary.vm:8143/orchestrator/v1/jobs/81")
    assert pe.job("https://primary.vm:8143/orchestrator/v1/jobs/81") == job
    assert pe.job_nodes(81) == items
    sent(fake, "GET", "https://primary.vm:8143/orchestrator/v1/jobs/81/nodes")


def test_inventory(fake: FakePE, pe: PEClient) -> None:
    items = [{"name": "replica.vm", "connected": True, "broker": "pcp://primary.vm/server"}]
    fake.on("POST", 8143, "/orchestrator/v1/inventory", httpx.Response(200, json={"items": items}))
    assert pe.inventory(["replica.vm"]) == items
    sent(fake, "POST", "https://primary.vm:8143/orchestrator/v1/inventory")
    assert fake.last_json() == {"nodes": ["replica.vm"]}


def test_inventory_with_the_broker_down_is_transient(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        8143,
        "/orchestrator/v1/inventory",
        httpx.Response(500, json={"kind": "broker-unavailable", "msg": "PCP broker unreachable"}),
    )
    with pytest.raises(ApiError) as caught:
        pe.inventory(["replica.vm"])
    assert caught.value.transient


# --- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [(200, "running"), (503, "error"), (503, "unknown")])
def test_simple_status(fake: FakePE, pe: PEClient, status: int, body: str) -> None:
    fake.on("GET", 8140, "/status/v1/simple", httpx.Response(status, text=body + "\n"))
    assert pe.simple_status() == body
    sent(fake, "GET", "https://primary.vm:8140/status/v1/simple")


def test_simple_status_of_one_service_on_another_port(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/status/v1/simple/rbac-service", httpx.Response(200, text="running"))
    assert pe.simple_status(4433, "rbac-service") == "running"
    sent(fake, "GET", "https://primary.vm:4433/status/v1/simple/rbac-service")


def test_simple_status_of_an_unknown_service_is_a_404(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 8140, "/status/v1/simple/nope", httpx.Response(404, text="not found: nope"))
    with pytest.raises(ApiError) as caught:
        pe.simple_status(service="nope")
    assert "not found: nope" in str(caught.value)


@pytest.mark.parametrize("status", [200, 503])
def test_services_returns_the_body_even_on_503(fake: FakePE, pe: PEClient, status: int) -> None:
    body = {"server": {"state": "running"}, "file-sync-client-service": {"state": "error"}}
    fake.on("GET", 8140, "/status/v1/services", httpx.Response(status, json=body))
    assert pe.services() == body
    sent(fake, "GET", "https://primary.vm:8140/status/v1/services")


def test_services_on_the_puppetdb_port(fake: FakePE, pe: PEClient) -> None:
    body = {"puppetdb-status": {"state": "running"}}
    fake.on("GET", 8081, "/status/v1/services", httpx.Response(200, json=body))
    assert pe.services(8081) == body


# --- PuppetDB -------------------------------------------------------------------------------------


def test_pdb_query_with_an_ast(fake: FakePE, pe: PEClient) -> None:
    rows = [{"certname": "linux.vm"}]
    fake.on("GET", 8081, "/pdb/query/v4/nodes", httpx.Response(200, json=rows))
    assert pe.pdb_query("nodes", ["=", "certname", "linux.vm"]) == rows
    assert fake.last.method == "GET"
    assert fake.last.url.path == "/pdb/query/v4/nodes"
    assert fake.last.url.params["query"] == '["=", "certname", "linux.vm"]'
    assert fake.last.headers["X-Authentication"] == TOKEN


def test_pdb_query_with_pql_and_without_query(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 8081, "/pdb/query/v4/producers", httpx.Response(200, json=[]))
    assert pe.pdb_query("producers") == []
    assert str(fake.last.url) == "https://primary.vm:8081/pdb/query/v4/producers"
    fake.on("GET", 8081, "/pdb/query/v4", httpx.Response(200, json=[{"certname": "a"}]))
    assert pe.pdb_query("", "nodes[certname] {}") == [{"certname": "a"}]
    assert fake.last.url.params["query"] == "nodes[certname] {}"


def test_latest_report(fake: FakePE, pe: PEClient) -> None:
    report = {
        "certname": "linux.vm",
        "producer": "replica.vm",
        "configuration_version": "replica-production-4d3c0a1e2f7",
    }
    fake.on("GET", 8081, "/pdb/query/v4/reports", httpx.Response(200, json=[report]))
    assert pe.latest_report("linux.vm") == report
    assert json.loads(fake.last.url.params["query"]) == [
        "and",
        ["=", "certname", "linux.vm"],
        ["=", "latest_report?", True],
    ]
    fake.on("GET", 8081, "/pdb/query/v4/reports", httpx.Response(200, json=[]))
    assert pe.latest_report("linux.vm") is None


def test_fact_queries_one_fact_of_one_node(fake: FakePE, pe: PEClient) -> None:
    rows = [{"certname": "linux.vm", "name": "pe_dr_marker", "value": "m"}]
    fake.on("GET", 8081, "/pdb/query/v4/facts", httpx.Response(200, json=rows))
    assert pe.fact("linux.vm", "pe_dr_marker") == rows
    assert json.loads(fake.last.url.params["query"]) == [
        "and",
        ["=", "certname", "linux.vm"],
        ["=", "name", "pe_dr_marker"],
    ]
