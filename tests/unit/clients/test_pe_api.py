"""PEClient against httpx.MockTransport: each request as PE documents it, each answer parsed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import ApiError, PermanentError, TransientError

TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
SERVER = "primary.vm"

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakePE:
    """Routes (method, host:port, path) to canned answers and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], Answer] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, port: int, path: str, answer: Answer) -> None:
        self.routes[(method, f"{SERVER}:{port}", path)] = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        key = (request.method, f"{request.url.host}:{request.url.port}", request.url.path)
        answer = self.routes.get(key)
        if answer is None:
            return httpx.Response(404, json={"kind": "not-found", "msg": f"no route {key}"})
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def fake() -> FakePE:
    return FakePE()


@pytest.fixture
def pe(fake: FakePE) -> Iterator[PEClient]:
    with PEClient(
        SERVER, host_map={}, ca_pem=None, token=TOKEN, transport=httpx.MockTransport(fake)
    ) as client:
        yield client


def _sent(fake: FakePE, method: str, url: str) -> None:
    assert fake.last.method == method
    assert str(fake.last.url) == url
    assert fake.last.headers["X-Authentication"] == TOKEN


# --- construction ------------------------------------------------------------------------------


def test_without_token_no_auth_header_is_sent(fake: FakePE) -> None:
    fake.on("GET", 4433, "/rbac-api/v1/roles", httpx.Response(200, json=[]))
    with PEClient(SERVER, host_map={}, ca_pem=None, transport=httpx.MockTransport(fake)) as pe:
        assert pe.roles() == []
        assert "X-Authentication" not in fake.last.headers
        pe.token = TOKEN
        pe.roles()
        assert fake.last.headers["X-Authentication"] == TOKEN


def test_every_request_is_bounded_by_the_timeout(fake: FakePE) -> None:
    fake.on("GET", 4433, "/rbac-api/v1/roles", httpx.Response(200, json=[]))
    with PEClient(
        SERVER, host_map={}, ca_pem=None, timeout=7.5, transport=httpx.MockTransport(fake)
    ) as pe:
        pe.roles()
    assert fake.last.extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }


def test_default_transport_is_the_lab_transport() -> None:
    from pe_dr.clients.http import LabTransport

    with PEClient(SERVER, host_map={SERVER: "192.0.2.4"}, ca_pem=None) as pe:
        transport = pe._http._transport
        assert isinstance(transport, LabTransport)
        assert transport.address_of("primary.vm") == "192.0.2.4"
        assert transport.address_of("gitlab.vm") == "gitlab.vm"


# --- RBAC --------------------------------------------------------------------------------------


def test_login(fake: FakePE) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/auth/token", httpx.Response(200, json={"token": "tok-1"}))
    with PEClient(SERVER, host_map={}, ca_pem=None, transport=httpx.MockTransport(fake)) as pe:
        assert pe.login("admin", "Puppetlabs+1", lifetime="4h", label="drill") == "tok-1"
    assert fake.last.method == "POST"
    assert str(fake.last.url) == "https://primary.vm:4433/rbac-api/v1/auth/token"
    assert fake.last_json() == {
        "login": "admin",
        "password": "Puppetlabs+1",
        "lifetime": "4h",
        "label": "drill",
    }
    assert fake.last.headers["Content-Type"] == "application/json"


def test_login_with_a_wrong_password_is_a_permanent_authentication_failure(fake: FakePE) -> None:
    password = "Wrong-Passw0rd!"
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/auth/token",
        httpx.Response(
            401,
            json={
                "kind": "puppetlabs.rbac/authentication-failed",
                "msg": f"The username or password ({password}) is invalid",
            },
        ),
    )
    pe = PEClient(SERVER, host_map={}, ca_pem=None, transport=httpx.MockTransport(fake))
    with pe, pytest.raises(ApiError) as caught:
        pe.login("admin", password)
    err = caught.value
    assert err.status == 401 and not err.transient
    assert err.kind == "puppetlabs.rbac/authentication-failed"
    assert "authentication failed" in str(err)
    assert password not in str(err)


def test_login_without_token_in_the_answer(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/auth/token", httpx.Response(200, json={}))
    with pytest.raises(PermanentError, match="without a token"):
        pe.login("admin", "Puppetlabs+1")


# PE answers 400 for a malformed token and 403 for a revoked or expired one (help.puppet.com/pe/
# 2023.8/topics/rbac_api_v2_auth_token_auth_post.htm); 401 kept for older releases.
@pytest.mark.parametrize(
    ("status", "valid"), [(200, True), (400, False), (401, False), (403, False)]
)
def test_token_is_valid(fake: FakePE, pe: PEClient, status: int, valid: bool) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v2/auth/token/authenticate",
        httpx.Response(status, json={"kind": "x", "msg": "y"}),
    )
    assert pe.token_is_valid("other-token-123") is valid
    _sent(fake, "POST", "https://primary.vm:4433/rbac-api/v2/auth/token/authenticate")
    assert fake.last_json() == {"token": "other-token-123", "update_last_activity?": False}


def test_token_is_valid_while_rbac_restarts_is_transient(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v2/auth/token/authenticate", httpx.Response(503))
    with pytest.raises(ApiError) as caught:
        pe.token_is_valid("other-token-123")
    assert caught.value.transient


USERS = [
    {"id": "42bf351c", "login": "admin", "email": "", "display_name": "Administrator"},
    {"id": "d3b07384", "login": "deploy", "email": "d@x", "display_name": "Deploy"},
]


def test_users_and_user_by_login(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/rbac-api/v1/users", httpx.Response(200, json=USERS))
    assert pe.users() == USERS
    _sent(fake, "GET", "https://primary.vm:4433/rbac-api/v1/users")
    assert pe.user_by_login("deploy") == USERS[1]
    assert pe.user_by_login("nobody") is None


def test_create_user(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/users",
        httpx.Response(201, headers={"Location": "/rbac-api/v1/users/d3b07384"}),
    )
    pe.create_user("deploy", email="deploy@example.com", display_name="Deploy", role_ids=[4])
    _sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/users")
    assert fake.last_json() == {
        "login": "deploy",
        "email": "deploy@example.com",
        "display_name": "Deploy",
        "role_ids": [4],
    }


def test_create_user_that_exists_is_a_permanent_409(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/users",
        httpx.Response(
            409,
            json={"kind": "puppetlabs.rbac/conflict", "msg": "login 'deploy' is already taken"},
        ),
    )
    with pytest.raises(ApiError) as caught:
        pe.create_user("deploy", email="d@x", display_name="Deploy")
    assert caught.value.status == 409 and not caught.value.transient
    assert "login 'deploy' is already taken" in str(caught.value)
    assert TOKEN not in str(caught.value)


ROLES = [
    {"id": 1, "display_name": "Administrators", "user_ids": []},
    {"id": 4, "display_name": "Code Deployers", "user_ids": []},
]


def test_roles_and_role_by_name(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/rbac-api/v1/roles", httpx.Response(200, json=ROLES))
    assert pe.roles() == ROLES
    _sent(fake, "GET", "https://primary.vm:4433/rbac-api/v1/roles")
    assert pe.role_by_name("Code Deployers")["id"] == 4
    with pytest.raises(PermanentError) as caught:
        pe.role_by_name("Deployers")
    assert str(caught.value) == (
        "the RBAC API on primary.vm has no role named 'Deployers' "
        "(roles: Administrators, Code Deployers)"
    )


def test_add_users_to_role(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/command/roles/add-users", httpx.Response(204))
    pe.add_users_to_role(4, ["d3b07384"])
    _sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/command/roles/add-users")
    assert fake.last_json() == {"role_id": 4, "user_ids": ["d3b07384"]}


def test_password_reset_token_is_the_plain_text_body(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/users/d3b07384/password/reset",
        httpx.Response(200, text="0Wbz-reset-token-xyz\n"),
    )
    assert pe.password_reset_token("d3b07384") == "0Wbz-reset-token-xyz"
    _sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/users/d3b07384/password/reset")


def test_reset_password(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/auth/reset", httpx.Response(200))
    pe.reset_password("0Wbz-reset-token-xyz", "Puppetlabs+1")
    _sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/auth/reset")
    assert fake.last_json() == {"token": "0Wbz-reset-token-xyz", "password": "Puppetlabs+1"}


def test_reset_password_with_a_used_token_is_permanent_and_secret_free(
    fake: FakePE, pe: PEClient
) -> None:
    reset_token = "0Wbz-used-reset-token"
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/auth/reset",
        httpx.Response(
            403, json={"kind": "permission-denied", "msg": f"token {reset_token} was used"}
        ),
    )
    with pytest.raises(ApiError) as caught:
        pe.reset_password(reset_token, "Puppetlabs+1")
    assert caught.value.status == 403 and not caught.value.transient
    assert reset_token not in str(caught.value)
    assert "Puppetlabs+1" not in str(caught.value)


# --- classifier ---------------------------------------------------------------------------------

GROUPS = [
    {"id": "00000000-0000-4000-8000-000000000000", "name": "All Nodes", "classes": {}},
    {
        "id": "6f4c2b1a-pe-master",
        "name": "PE Master",
        "classes": {"puppet_enterprise::profile::master": {}},
    },
]


def test_groups_and_group_by_name(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/classifier-api/v1/groups", httpx.Response(200, json=GROUPS))
    assert pe.groups() == GROUPS
    _sent(fake, "GET", "https://primary.vm:4433/classifier-api/v1/groups")
    assert pe.group_by_name("PE Master")["id"] == "6f4c2b1a-pe-master"
    with pytest.raises(PermanentError) as caught:
        pe.group_by_name("PE HA Replica")
    assert (
        str(caught.value) == "the classifier on primary.vm has no node group named 'PE HA Replica'"
    )


def test_update_group(fake: FakePE, pe: PEClient) -> None:
    updated = {**GROUPS[1], "serial_number": 3}
    fake.on(
        "POST",
        4433,
        "/classifier-api/v1/groups/6f4c2b1a-pe-master",
        httpx.Response(200, json=updated),
    )
    delta = {
        "classes": {"puppet_enterprise::profile::master": {"code_manager_auto_configure": True}}
    }
    assert pe.update_group("6f4c2b1a-pe-master", delta) == updated
    _sent(fake, "POST", "https://primary.vm:4433/classifier-api/v1/groups/6f4c2b1a-pe-master")
    assert fake.last_json() == delta


def test_update_group_with_an_unknown_parameter_is_a_permanent_422(
    fake: FakePE, pe: PEClient
) -> None:
    fake.on(
        "POST",
        4433,
        "/classifier-api/v1/groups/6f4c2b1a-pe-master",
        httpx.Response(
            422,
            json={"kind": "missing-referents", "msg": "parameter r10k_known_hosts does not exist"},
        ),
    )
    with pytest.raises(ApiError) as caught:
        pe.update_group("6f4c2b1a-pe-master", {"classes": {}})
    assert caught.value.kind == "missing-referents" and not caught.value.transient


def test_set_class_parameters(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/classifier-api/v1/groups", httpx.Response(200, json=GROUPS))
    fake.on(
        "POST",
        4433,
        "/classifier-api/v1/groups/6f4c2b1a-pe-master",
        lambda request: httpx.Response(200, json={**GROUPS[1], **json.loads(request.content)}),
    )
    params = {"r10k_remote": "git@gitlab.vm:root/control-repo.git", "r10k_known_hosts": None}
    result = pe.set_class_parameters("PE Master", "puppet_enterprise::profile::master", params)
    assert fake.last_json() == {"classes": {"puppet_enterprise::profile::master": params}}
    assert result["classes"] == {"puppet_enterprise::profile::master": params}


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
    _sent(fake, "POST", "https://primary.vm:8170/code-manager/v1/deploys")
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
    _sent(fake, "GET", "https://primary.vm:8170/code-manager/v1/deploys/status")


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
    _sent(fake, "POST", "https://primary.vm:8143/orchestrator/v1/command/deploy")
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
    _sent(fake, "GET", "https://primary.vm:8143/orchestrator/v1/jobs/81")
    assert pe.job("https://primary.vm:8143/orchestrator/v1/jobs/81") == job
    assert pe.job_nodes(81) == items
    _sent(fake, "GET", "https://primary.vm:8143/orchestrator/v1/jobs/81/nodes")


def test_inventory(fake: FakePE, pe: PEClient) -> None:
    items = [{"name": "replica.vm", "connected": True, "broker": "pcp://primary.vm/server"}]
    fake.on("POST", 8143, "/orchestrator/v1/inventory", httpx.Response(200, json={"items": items}))
    assert pe.inventory(["replica.vm"]) == items
    _sent(fake, "POST", "https://primary.vm:8143/orchestrator/v1/inventory")
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
    _sent(fake, "GET", "https://primary.vm:8140/status/v1/simple")


def test_simple_status_of_one_service_on_another_port(fake: FakePE, pe: PEClient) -> None:
    fake.on("GET", 4433, "/status/v1/simple/rbac-service", httpx.Response(200, text="running"))
    assert pe.simple_status(4433, "rbac-service") == "running"
    _sent(fake, "GET", "https://primary.vm:4433/status/v1/simple/rbac-service")


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
    _sent(fake, "GET", "https://primary.vm:8140/status/v1/services")


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


# --- transport failures ---------------------------------------------------------------------------


def _failing(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


def test_connection_refused_is_transient_and_names_host_and_port() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    pe = PEClient(SERVER, host_map={}, ca_pem=None, token=TOKEN, transport=_failing(refused))
    with pe, pytest.raises(TransientError) as caught:
        pe.users()
    assert str(caught.value) == "cannot reach primary.vm:4433: connection refused"
    assert TOKEN not in str(caught.value)


def test_a_timeout_is_transient() -> None:
    with (
        PEClient(
            SERVER,
            host_map={},
            ca_pem=None,
            token=TOKEN,
            transport=_failing(httpx.ReadTimeout("timed out")),
        ) as pe,
        pytest.raises(TransientError) as caught,
    ):
        pe.job("81")
    assert str(caught.value) == (
        "primary.vm:8143 did not answer in time "
        "(waiting for the answer, https://primary.vm:8143/orchestrator/v1/jobs/81)"
    )


def test_401_with_an_expired_token_says_authentication_failed(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "GET",
        4433,
        "/classifier-api/v1/groups",
        httpx.Response(
            401,
            json={
                "kind": "puppetlabs.rbac/token-expired",
                "msg": f"The provided token has expired: {TOKEN}",
            },
        ),
    )
    with pytest.raises(ApiError) as caught:
        pe.groups()
    message = str(caught.value)
    assert message.startswith(
        "classifier API on primary.vm:4433 answered HTTP 401: authentication failed"
    )
    assert TOKEN not in message
    assert not caught.value.transient


def test_create_group_posts_the_group_and_returns_the_id_from_location(
    fake: FakePE, pe: PEClient
) -> None:
    gid = "2c5a2b28-1f6b-4e43-9b1e-6d3f7c1a0b11"
    fake.on(
        "POST",
        4433,
        "/classifier-api/v1/groups",
        httpx.Response(303, headers={"Location": f"/classifier-api/v1/groups/{gid}"}),
    )
    assert pe.create_group({"name": "g", "parent": "p"}) == gid
    assert fake.last_json() == {"name": "g", "parent": "p"}


def test_a_creation_without_location_is_a_permanent_error(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/roles", httpx.Response(201))
    with pytest.raises(PermanentError, match="without saying where"):
        pe.create_role("r", "d")


def test_create_role_has_no_permissions_and_no_members(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/roles",
        httpx.Response(201, headers={"Location": "/rbac-api/v1/roles/7"}),
    )
    assert pe.create_role("pe-dr-drill marker x", "tagged") == 7
    body = fake.last_json()
    assert body["permissions"] == [] and body["user_ids"] == [] and body["group_ids"] == []


def test_deleting_what_is_gone_is_false_and_other_errors_raise(fake: FakePE, pe: PEClient) -> None:
    fake.on("DELETE", 4433, "/rbac-api/v1/roles/7", httpx.Response(404, json={"kind": "x"}))
    assert pe.delete_role(7) is False
    fake.on("DELETE", 4433, "/classifier-api/v1/groups/g1", httpx.Response(204))
    assert pe.delete_group("g1") is True
    fake.on("DELETE", 4433, "/classifier-api/v1/groups/g2", httpx.Response(422, json={}))
    with pytest.raises(ApiError):
        pe.delete_group("g2")


def test_fact_queries_one_fact_of_one_node(fake: FakePE, pe: PEClient) -> None:
    rows = [{"certname": "linux.vm", "name": "pe_dr_marker", "value": "m"}]
    fake.on("GET", 8081, "/pdb/query/v4/facts", httpx.Response(200, json=rows))
    assert pe.fact("linux.vm", "pe_dr_marker") == rows
    assert json.loads(fake.last.url.params["query"]) == [
        "and",
        ["=", "certname", "linux.vm"],
        ["=", "name", "pe_dr_marker"],
    ]
