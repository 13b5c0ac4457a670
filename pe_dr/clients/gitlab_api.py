"""Client for the GitLab REST API v4 calls the drill makes on gitlab.vm (reference §7).

Plain HTTP as in the lab (the host name is mapped to the lab address like every VM); the personal
access token goes in `PRIVATE-TOKEN`. Failures raise `pe_dr.errors` classes.
"""

from __future__ import annotations

from typing import Any, Unpack
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from pe_dr.clients.http import ApiClient, Connection, request_json, send
from pe_dr.errors import PermanentError
from pe_dr.secrets import remember

TOKEN_HEADER = "PRIVATE-TOKEN"  # noqa: S105 (a header name)


def _project_ref(path_or_id: str | int) -> str:
    """A project id, or its path URL-encoded (`root/control-repo` → `root%2Fcontrol-repo`)."""
    return quote(str(path_or_id), safe="")


def _remember_url_secrets(url: str) -> None:
    """Hook URLs carry the Code Manager webhook token in their query string: never show it."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name.lower() in {"token", "private_token", "access_token"}:
            remember(value)


class GitLabClient(ApiClient):
    """The REST API of one GitLab instance, e.g. `GitLabClient("http://gitlab.vm", ...)`."""

    token_header = TOKEN_HEADER

    def __init__(self, base_url: str, **connection: Unpack[Connection]) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = f"GitLab API on {httpx.URL(self.base_url).host}"
        super().__init__(ca_pem=None, **connection)  # GitLab: plain HTTP

    def _api(self, method: str, path: str, **kw: Any) -> Any:
        return request_json(
            self._http, method, f"{self.base_url}/api/v4{path}", service=self.service, **kw
        )

    def _dict(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        answer = self._api(method, path, **kw)
        return answer if isinstance(answer, dict) else {}

    def _list(self, method: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        return list(self._api(method, path, **kw) or [])

    def current_user(self) -> dict[str, Any]:
        """The token's user (GET /api/v4/user)."""
        return self._dict("GET", "/user")

    def project(self, path_or_id: str | int) -> dict[str, Any] | None:
        """A project by id or `namespace/name` path (GET /api/v4/projects/<ref>), None if absent."""
        response = send(
            self._http,
            "GET",
            f"{self.base_url}/api/v4/projects/{_project_ref(path_or_id)}",
            service=self.service,
            accept=(404,),
        )
        if response.status_code == 404:
            return None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PermanentError(f"{self.service} answered a project lookup with no project")
        return answer

    def create_project(self, name: str, *, visibility: str = "private") -> dict[str, Any]:
        """Create an empty project in the user's namespace (POST /api/v4/projects)."""
        return self._dict("POST", "/projects", json={"name": name, "visibility": visibility})

    def user_keys(self) -> list[dict[str, Any]]:
        """The user's SSH keys (GET /api/v4/user/keys)."""
        return self._list("GET", "/user/keys")

    def add_user_key(self, title: str, key: str) -> dict[str, Any]:
        """Register an SSH public key on the user (POST /api/v4/user/keys)."""
        return self._dict("POST", "/user/keys", json={"title": title, "key": key})

    def hooks(self, project_id: str | int) -> list[dict[str, Any]]:
        """A project's webhooks (GET /api/v4/projects/<id>/hooks)."""
        return self._list("GET", f"/projects/{_project_ref(project_id)}/hooks")

    def add_hook(
        self,
        project_id: str | int,
        url: str,
        *,
        push_events: bool = True,
        enable_ssl_verification: bool = True,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Add a webhook (POST /api/v4/projects/<id>/hooks); `token` is sent as X-Gitlab-Token."""
        _remember_url_secrets(url)
        body: dict[str, Any] = {
            "url": url,
            "push_events": push_events,
            "enable_ssl_verification": enable_ssl_verification,
        }
        if token:
            body["token"] = remember(token)
        return self._dict("POST", f"/projects/{_project_ref(project_id)}/hooks", json=body)

    def update_hook(
        self,
        project_id: str | int,
        hook_id: int,
        url: str,
        *,
        push_events: bool = True,
        enable_ssl_verification: bool = True,
    ) -> dict[str, Any]:
        """Change a webhook (PUT /api/v4/projects/<id>/hooks/<hook_id>)."""
        _remember_url_secrets(url)
        return self._dict(
            "PUT",
            f"/projects/{_project_ref(project_id)}/hooks/{hook_id}",
            json={
                "url": url,
                "push_events": push_events,
                "enable_ssl_verification": enable_ssl_verification,
            },
        )

    def delete_hook(self, project_id: str | int, hook_id: int) -> None:
        """Remove a webhook (DELETE /api/v4/projects/<id>/hooks/<hook_id>)."""
        self._api("DELETE", f"/projects/{_project_ref(project_id)}/hooks/{hook_id}")

    def application_settings(self) -> dict[str, Any]:
        """Instance settings (GET /api/v4/application/settings, admin only)."""
        return self._dict("GET", "/application/settings")

    def update_application_settings(self, **settings: Any) -> dict[str, Any]:
        """Change instance settings (PUT /api/v4/application/settings), e.g.
        `allow_local_requests_from_web_hooks_and_services=True`."""
        return self._dict("PUT", "/application/settings", json=settings)
