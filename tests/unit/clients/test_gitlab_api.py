"""GitLabClient against httpx.MockTransport: requests as GitLab documents them, answers parsed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pe_dr.clients.gitlab_api import GitLabClient
from pe_dr.errors import ApiError, TransientError

from .recorder import Recorder

TOKEN = "glpat-pe-dr-drill-0123456789"
WEBHOOK_TOKEN = "cm-webhook-token-abcdef"
HOOK_URL = f"https://primary.vm:8170/code-manager/v1/webhook?type=gitlab&token={WEBHOOK_TOKEN}"


class FakeGitLab(Recorder):
    """Routes (method, raw path) to canned answers and records every request."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], httpx.Response] = {}

    def on(self, method: str, raw_path: str, answer: httpx.Response) -> None:
        self.routes[(method, raw_path)] = answer

    def answer(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.raw_path.decode("ascii").split("?")[0])
        return self.routes.get(key, httpx.Response(404, json={"message": "404 Not Found"}))


@pytest.fixture
def fake() -> FakeGitLab:
    return FakeGitLab()


@pytest.fixture
def gitlab(fake: FakeGitLab) -> Iterator[GitLabClient]:
    with GitLabClient(
        "http://gitlab.vm/", host_map={}, token=TOKEN, transport=httpx.MockTransport(fake)
    ) as client:
        yield client


def _sent(fake: FakeGitLab, method: str, url: str) -> None:
    assert fake.last.method == method
    assert str(fake.last.url) == url
    assert fake.last.headers["PRIVATE-TOKEN"] == TOKEN


def test_current_user(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    user = {"id": 1, "username": "root", "is_admin": True}
    fake.on("GET", "/api/v4/user", httpx.Response(200, json=user))
    assert gitlab.current_user() == user
    _sent(fake, "GET", "http://gitlab.vm/api/v4/user")


def test_base_url_with_a_port(fake: FakeGitLab) -> None:
    fake.on("GET", "/api/v4/user", httpx.Response(200, json={"id": 1}))
    with GitLabClient(
        "http://gitlab.vm:8080", host_map={}, token=TOKEN, transport=httpx.MockTransport(fake)
    ) as gitlab:
        gitlab.current_user()
    assert str(fake.last.url) == "http://gitlab.vm:8080/api/v4/user"


def test_default_transport_maps_gitlab_vm() -> None:
    with GitLabClient("http://gitlab.vm", host_map={"gitlab.vm": "192.0.2.7"}) as gitlab:
        transport = gitlab._http._transport
        assert transport.address_of("gitlab.vm") == "192.0.2.7"  # type: ignore[attr-defined]
        assert "PRIVATE-TOKEN" not in gitlab._http.headers


def test_project_by_url_encoded_path(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    project = {"id": 7, "path_with_namespace": "root/control-repo"}
    fake.on("GET", "/api/v4/projects/root%2Fcontrol-repo", httpx.Response(200, json=project))
    assert gitlab.project("root/control-repo") == project
    assert fake.last.url.raw_path == b"/api/v4/projects/root%2Fcontrol-repo"
    assert fake.last.headers["PRIVATE-TOKEN"] == TOKEN


def test_project_by_id_and_missing_project(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    fake.on("GET", "/api/v4/projects/7", httpx.Response(200, json={"id": 7}))
    assert gitlab.project(7) == {"id": 7}
    assert gitlab.project("root/nothing") is None
    assert fake.last.url.raw_path == b"/api/v4/projects/root%2Fnothing"


def test_create_project(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    created = {
        "id": 7,
        "path_with_namespace": "root/control-repo",
        "ssh_url_to_repo": "git@gitlab.vm:root/control-repo.git",
    }
    fake.on("POST", "/api/v4/projects", httpx.Response(201, json=created))
    assert gitlab.create_project("control-repo") == created
    _sent(fake, "POST", "http://gitlab.vm/api/v4/projects")
    assert fake.last_json() == {"name": "control-repo", "visibility": "private"}


def test_create_project_that_exists_is_permanent(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    fake.on(
        "POST",
        "/api/v4/projects",
        httpx.Response(
            400,
            json={
                "message": {"name": ["has already been taken"], "path": ["has already been taken"]}
            },
        ),
    )
    with pytest.raises(ApiError) as caught:
        gitlab.create_project("control-repo", visibility="internal")
    assert fake.last_json()["visibility"] == "internal"
    assert caught.value.status == 400 and not caught.value.transient
    assert "has already been taken" in str(caught.value)


def test_user_keys_and_add_user_key(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    keys = [{"id": 1, "title": "pe-dr r10k", "key": "ssh-rsa AAAA pe-dr"}]
    fake.on("GET", "/api/v4/user/keys", httpx.Response(200, json=keys))
    assert gitlab.user_keys() == keys
    _sent(fake, "GET", "http://gitlab.vm/api/v4/user/keys")
    fake.on("POST", "/api/v4/user/keys", httpx.Response(201, json=keys[0]))
    assert gitlab.add_user_key("pe-dr r10k", "ssh-rsa AAAA pe-dr") == keys[0]
    _sent(fake, "POST", "http://gitlab.vm/api/v4/user/keys")
    assert fake.last_json() == {"title": "pe-dr r10k", "key": "ssh-rsa AAAA pe-dr"}


def test_hooks(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    hooks = [{"id": 3, "url": HOOK_URL, "push_events": True}]
    fake.on("GET", "/api/v4/projects/7/hooks", httpx.Response(200, json=hooks))
    assert gitlab.hooks(7) == hooks
    _sent(fake, "GET", "http://gitlab.vm/api/v4/projects/7/hooks")


def test_add_hook(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    hook = {"id": 3, "url": HOOK_URL, "push_events": True, "enable_ssl_verification": True}
    fake.on("POST", "/api/v4/projects/root%2Fcontrol-repo/hooks", httpx.Response(201, json=hook))
    assert gitlab.add_hook("root/control-repo", HOOK_URL, token="x-gitlab-token-1") == hook
    assert fake.last.method == "POST"
    assert fake.last.url.raw_path == b"/api/v4/projects/root%2Fcontrol-repo/hooks"
    assert fake.last_json() == {
        "url": HOOK_URL,
        "push_events": True,
        "enable_ssl_verification": True,
        "token": "x-gitlab-token-1",
    }


def test_add_hook_refused_keeps_the_webhook_token_out_of_the_message(
    fake: FakeGitLab, gitlab: GitLabClient
) -> None:
    fake.on(
        "POST",
        "/api/v4/projects/7/hooks",
        httpx.Response(
            422,
            json={"error": f"Invalid url given: {HOOK_URL} (requests to the local network)"},
        ),
    )
    with pytest.raises(ApiError) as caught:
        gitlab.add_hook(7, HOOK_URL, enable_ssl_verification=False)
    assert fake.last_json() == {
        "url": HOOK_URL,
        "push_events": True,
        "enable_ssl_verification": False,
    }
    assert WEBHOOK_TOKEN not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_update_hook(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    hook = {"id": 3, "url": HOOK_URL, "push_events": False}
    fake.on("PUT", "/api/v4/projects/7/hooks/3", httpx.Response(200, json=hook))
    assert gitlab.update_hook(7, 3, HOOK_URL, push_events=False) == hook
    _sent(fake, "PUT", "http://gitlab.vm/api/v4/projects/7/hooks/3")
    assert fake.last_json() == {
        "url": HOOK_URL,
        "push_events": False,
        "enable_ssl_verification": True,
    }


def test_application_settings(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    settings = {"allow_local_requests_from_web_hooks_and_services": False}
    fake.on("GET", "/api/v4/application/settings", httpx.Response(200, json=settings))
    assert gitlab.application_settings() == settings
    _sent(fake, "GET", "http://gitlab.vm/api/v4/application/settings")


def test_update_application_settings(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    updated = {
        "allow_local_requests_from_web_hooks_and_services": True,
        "dns_rebinding_protection_enabled": False,
    }
    fake.on("PUT", "/api/v4/application/settings", httpx.Response(200, json=updated))
    assert gitlab.update_application_settings(**updated) == updated
    _sent(fake, "PUT", "http://gitlab.vm/api/v4/application/settings")
    assert fake.last_json() == updated


def test_401_is_a_permanent_authentication_failure(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    fake.on("GET", "/api/v4/user", httpx.Response(401, json={"message": "401 Unauthorized"}))
    with pytest.raises(ApiError) as caught:
        gitlab.current_user()
    message = str(caught.value)
    assert message.startswith("GitLab API on gitlab.vm answered HTTP 401: authentication failed")
    assert "401 Unauthorized" in message
    assert TOKEN not in message
    assert not caught.value.transient


def test_403_on_settings_without_admin(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    fake.on(
        "PUT",
        "/api/v4/application/settings",
        httpx.Response(403, json={"message": "403 Forbidden"}),
    )
    with pytest.raises(ApiError) as caught:
        gitlab.update_application_settings(allow_local_requests_from_system_hooks=True)
    assert "permission denied" in str(caught.value)
    assert not caught.value.transient


def test_502_while_gitlab_starts_is_transient(fake: FakeGitLab, gitlab: GitLabClient) -> None:
    fake.on("GET", "/api/v4/projects/7", httpx.Response(502, text="<html>GitLab is not responding"))
    with pytest.raises(ApiError) as caught:
        gitlab.project(7)
    assert caught.value.transient and caught.value.status == 502


def test_connection_refused_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused") from ConnectionRefusedError(
            111, "Connection refused"
        )

    with (
        GitLabClient(
            "http://gitlab.vm", host_map={}, token=TOKEN, transport=httpx.MockTransport(refuse)
        ) as gitlab,
        pytest.raises(TransientError) as caught,
    ):
        gitlab.hooks(7)
    assert str(caught.value) == "cannot reach gitlab.vm:80: connection refused"
    assert TOKEN not in str(caught.value)
