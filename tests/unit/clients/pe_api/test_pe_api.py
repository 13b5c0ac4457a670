"""PEClient against httpx.MockTransport: construction, RBAC, the classifier and failures, each
request as PE documents it, each answer parsed."""

from __future__ import annotations

import json

import httpx
import pytest

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import ApiError, PermanentError, TransientError

from .fake_pe import SERVER, TOKEN, FakePE, sent

# --- construction ------------------------------------------------------------------------------


def test_without_token_no_auth_header_issent(fake: FakePE) -> None:
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
    sent(fake, "POST", "https://primary.vm:4433/rbac-api/v2/auth/token/authenticate")
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
    sent(fake, "GET", "https://primary.vm:4433/rbac-api/v1/users")
    assert pe.user_by_login("deploy") == USERS[1]
    assert pe.user_by_login("nobody") is None


def test_create_user(fake: FakePE, pe: PEClient) -> None:
    fake.on_created("/rbac-api/v1/users", "/rbac-api/v1/users/d3b07384")
    pe.create_user("deploy", email="deploy@example.com", display_name="Deploy", role_ids=[4])
    sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/users")
    assert fake.last_json() == {
        "login": "deploy",
        "email": "deploy@example.com",
        "display_name": "Deploy",
        "role_ids": [4],
    }


def test_create_user_that_exists_is_a_permanent_409(fake: FakePE, pe: PEClient) -> None:
    conflict = "login 'deploy' is already taken"
    fake.on_error("POST", "/rbac-api/v1/users", 409, "puppetlabs.rbac/conflict", conflict)
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
    sent(fake, "GET", "https://primary.vm:4433/rbac-api/v1/roles")
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
    sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/command/roles/add-users")
    assert fake.last_json() == {"role_id": 4, "user_ids": ["d3b07384"]}


def test_password_reset_token_is_the_plain_text_body(fake: FakePE, pe: PEClient) -> None:
    fake.on(
        "POST",
        4433,
        "/rbac-api/v1/users/d3b07384/password/reset",
        httpx.Response(200, text="0Wbz-reset-token-xyz\n"),
    )
    assert pe.password_reset_token("d3b07384") == "0Wbz-reset-token-xyz"
    sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/users/d3b07384/password/reset")


def test_reset_password(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/auth/reset", httpx.Response(200))
    pe.reset_password("0Wbz-reset-token-xyz", "Puppetlabs+1")
    sent(fake, "POST", "https://primary.vm:4433/rbac-api/v1/auth/reset")
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
    sent(fake, "GET", "https://primary.vm:4433/classifier-api/v1/groups")
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
    sent(fake, "POST", "https://primary.vm:4433/classifier-api/v1/groups/6f4c2b1a-pe-master")
    assert fake.last_json() == delta


def test_update_group_with_an_unknown_parameter_is_a_permanent_422(
    fake: FakePE, pe: PEClient
) -> None:
    unknown = "parameter r10k_known_hosts does not exist"
    group = "/classifier-api/v1/groups/6f4c2b1a-pe-master"
    fake.on_error("POST", group, 422, "missing-referents", unknown)
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
    expired = f"The provided token has expired: {TOKEN}"
    groups = "/classifier-api/v1/groups"
    fake.on_error("GET", groups, 401, "puppetlabs.rbac/token-expired", expired)
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
    fake.on_created("/classifier-api/v1/groups", f"/classifier-api/v1/groups/{gid}", 303)
    assert pe.create_group({"name": "g", "parent": "p"}) == gid
    assert fake.last_json() == {"name": "g", "parent": "p"}


def test_a_creation_without_location_is_a_permanent_error(fake: FakePE, pe: PEClient) -> None:
    fake.on("POST", 4433, "/rbac-api/v1/roles", httpx.Response(201))
    with pytest.raises(PermanentError, match="without saying where"):
        pe.create_role("r", "d")


def test_create_role_has_no_permissions_and_no_members(fake: FakePE, pe: PEClient) -> None:
    fake.on_created("/rbac-api/v1/roles", "/rbac-api/v1/roles/7")
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
