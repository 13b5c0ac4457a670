"""Client for the Puppet Enterprise HTTP APIs the drill uses: RBAC, classifier, Code Manager,
orchestrator, status and PuppetDB (reference §3), one method per API call.

Every call is bounded by the client's timeout, verifies TLS against the lab CA with the PE host name
and sends the RBAC token in `X-Authentication`. Failures raise `pe_dr.errors` classes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Unpack
from urllib.parse import quote

import httpx

from pe_dr.clients.http import ApiClient, Connection, request_json, send
from pe_dr.errors import PermanentError
from pe_dr.secrets import remember

RBAC_PORT = 4433
CLASSIFIER_PORT = 4433
CODE_MANAGER_PORT = 8170
ORCHESTRATOR_PORT = 8143
PUPPETSERVER_PORT = 8140
PUPPETDB_PORT = 8081

#: Read timeout of a Code Manager deploy that waits for the deploy to finish.
DEPLOY_WAIT_TIMEOUT = 600.0

TOKEN_HEADER = "X-Authentication"  # noqa: S105 (a header name)


class PEClient(ApiClient):
    """The PE APIs of one PE server (`primary.vm` or, after promotion, `replica.vm`)."""

    token_header = TOKEN_HEADER

    def __init__(
        self,
        server: str,
        *,
        ca_pem: bytes | None,
        **connection: Unpack[Connection],
    ) -> None:
        self.server = server
        super().__init__(ca_pem=ca_pem, **connection)

    # --- plumbing -------------------------------------------------------------------------------

    def _url(self, port: int, path: str) -> str:
        return f"https://{self.server}:{port}{path}"

    def _service(self, name: str, port: int) -> str:
        return f"{name} on {self.server}:{port}"

    def _call(self, name: str, port: int, method: str, path: str, **kw: Any) -> Any:
        return request_json(
            self._http, method, self._url(port, path), service=self._service(name, port), **kw
        )

    def _delete(self, name: str, port: int, path: str) -> bool:
        """DELETE `path`: False when there was nothing to delete (404), True when it is gone."""
        response = send(
            self._http,
            "DELETE",
            self._url(port, path),
            service=self._service(name, port),
            accept=(404,),
        )
        return response.status_code != 404

    def _rbac(self, method: str, path: str, **kw: Any) -> Any:
        return self._call("RBAC API", RBAC_PORT, method, f"/rbac-api{path}", **kw)

    def _classifier(self, method: str, path: str, **kw: Any) -> Any:
        return self._call(
            "classifier API", CLASSIFIER_PORT, method, f"/classifier-api/v1{path}", **kw
        )

    def _orchestrator(self, method: str, path: str, **kw: Any) -> Any:
        return self._call(
            "orchestrator API", ORCHESTRATOR_PORT, method, f"/orchestrator/v1{path}", **kw
        )

    # --- RBAC (§3.2) ----------------------------------------------------------------------------

    def login(
        self, login: str, password: str, *, lifetime: str = "1h", label: str | None = None
    ) -> str:
        """A new token for `login` (POST /rbac-api/v1/auth/token); 401 on a wrong password."""
        remember(password)
        body: dict[str, Any] = {"login": login, "password": password, "lifetime": lifetime}
        if label is not None:
            body["label"] = label
        answer = self._rbac("POST", "/v1/auth/token", json=body)
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise PermanentError(f"the RBAC API on {self.server} answered a login without a token")
        return remember(token)

    def token_is_valid(self, token: str) -> bool:
        """Whether RBAC accepts `token` (POST /rbac-api/v2/auth/token/authenticate): 400 means
        malformed, 403 revoked or expired (PE 2023.8 RBAC API v2 docs), 401 on older releases."""
        remember(token)
        response = send(
            self._http,
            "POST",
            self._url(RBAC_PORT, "/rbac-api/v2/auth/token/authenticate"),
            service=self._service("RBAC API", RBAC_PORT),
            accept=(400, 401, 403),
            json={"token": token, "update_last_activity?": False},
        )
        return response.is_success

    def users(self) -> list[dict[str, Any]]:
        """All RBAC users (GET /rbac-api/v1/users)."""
        return list(self._rbac("GET", "/v1/users") or [])

    def user_by_login(self, login: str) -> dict[str, Any] | None:
        """The user called `login`, or None."""
        return next((u for u in self.users() if u.get("login") == login), None)

    def create_user(
        self, login: str, *, email: str, display_name: str, role_ids: Iterable[int] = ()
    ) -> None:
        """Create a user without password (POST /rbac-api/v1/users); 409 if it exists."""
        self._rbac(
            "POST",
            "/v1/users",
            json={
                "login": login,
                "email": email,
                "display_name": display_name,
                "role_ids": list(role_ids),
            },
        )

    def roles(self) -> list[dict[str, Any]]:
        """All RBAC roles (GET /rbac-api/v1/roles)."""
        return list(self._rbac("GET", "/v1/roles") or [])

    def role_by_name(self, display_name: str) -> dict[str, Any]:
        """The role whose display name is `display_name` (PermanentError if there is none)."""
        roles = self.roles()
        for role in roles:
            if role.get("display_name") == display_name:
                return role
        known = ", ".join(sorted(str(r.get("display_name")) for r in roles)) or "none"
        raise PermanentError(
            f"the RBAC API on {self.server} has no role named {display_name!r} (roles: {known})"
        )

    def add_users_to_role(self, role_id: int, user_ids: Iterable[str]) -> None:
        """Grant a role (POST /rbac-api/v1/command/roles/add-users)."""
        self._rbac(
            "POST",
            "/v1/command/roles/add-users",
            json={"role_id": role_id, "user_ids": list(user_ids)},
        )

    def create_role(self, display_name: str, description: str) -> int:
        """A role with no permissions and no members (POST /rbac-api/v1/roles: 201 Created, its
        Location the new role; DA-2018.1 rbac_api_v1_user_role.md); its id."""
        response = send(
            self._http,
            "POST",
            self._url(RBAC_PORT, "/rbac-api/v1/roles"),
            service=self._service("RBAC API", RBAC_PORT),
            json={
                "display_name": display_name,
                "description": description,
                "permissions": [],
                "user_ids": [],
                "group_ids": [],
            },
        )
        return int(_created_id(response, self.server, "role"))

    def role(self, role_id: int) -> dict[str, Any]:
        """One role (GET /rbac-api/v1/roles/<id>)."""
        answer = self._rbac("GET", f"/v1/roles/{int(role_id)}")
        return answer if isinstance(answer, dict) else {}

    def replace_role(self, role: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a role with `role`, which names its own id (PUT /rbac-api/v1/roles/<id>: 200
        with the role; DA-2018.1 rbac_api_v1_user_role.md)."""
        answer = self._rbac("PUT", f"/v1/roles/{int(role['id'])}", json=dict(role))
        return answer if isinstance(answer, dict) else {}

    def delete_role(self, role_id: int) -> bool:
        """Delete a role (DELETE /rbac-api/v1/roles/<id>: 200, same source); False when there
        was none (404)."""
        return self._delete("RBAC API", RBAC_PORT, f"/rbac-api/v1/roles/{int(role_id)}")

    def password_reset_token(self, user_id: str) -> str:
        """A single-use password reset token (POST /rbac-api/v1/users/<id>/password/reset)."""
        response = send(
            self._http,
            "POST",
            self._url(RBAC_PORT, f"/rbac-api/v1/users/{quote(user_id, safe='')}/password/reset"),
            service=self._service("RBAC API", RBAC_PORT),
        )
        token = response.text.strip()
        if not token:
            raise PermanentError(
                f"the RBAC API on {self.server} answered a password reset without a token"
            )
        return remember(token)

    def reset_password(self, reset_token: str, new_password: str) -> None:
        """Set a password with a reset token (POST /rbac-api/v1/auth/reset); 403 if used/expired."""
        remember(reset_token)
        remember(new_password)
        self._rbac("POST", "/v1/auth/reset", json={"token": reset_token, "password": new_password})

    # --- node classifier (§3.3) -----------------------------------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        """All node groups (GET /classifier-api/v1/groups)."""
        return list(self._classifier("GET", "/groups") or [])

    def group_by_name(self, name: str) -> dict[str, Any]:
        """The node group called `name` (PermanentError if there is none)."""
        for group in self.groups():
            if group.get("name") == name:
                return group
        raise PermanentError(f"the classifier on {self.server} has no node group named {name!r}")

    def create_group(self, group: Mapping[str, Any]) -> str:
        """Create a node group (POST /classifier-api/v1/groups, DA-2018.1 groups_endpoint.md: the
        classifier picks the id; 303 See Other, its Location the new group); its id."""
        response = send(
            self._http,
            "POST",
            self._url(CLASSIFIER_PORT, "/classifier-api/v1/groups"),
            service=self._service("classifier API", CLASSIFIER_PORT),
            accept=(303,),
            json=dict(group),
        )
        return _created_id(response, self.server, "node group")

    def delete_group(self, group_id: str) -> bool:
        """Delete a node group (DELETE /classifier-api/v1/groups/<id>, groups_endpoint.md);
        False when there was none (404)."""
        path = f"/classifier-api/v1/groups/{quote(group_id, safe='')}"
        return self._delete("classifier API", CLASSIFIER_PORT, path)

    def update_group(self, group_id: str, delta: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a delta to a group (POST /classifier-api/v1/groups/<id>); the updated group."""
        answer = self._classifier("POST", f"/groups/{quote(group_id, safe='')}", json=dict(delta))
        return answer if isinstance(answer, dict) else {}

    def set_class_parameters(
        self, group_name: str, class_name: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `params` into `class_name` of the group called `group_name` (None deletes one)."""
        group = self.group_by_name(group_name)
        return self.update_group(group["id"], {"classes": {class_name: dict(params)}})

    # --- Code Manager (§3.4) --------------------------------------------------------------------

    def deploy(
        self, environments: list[str], *, wait: bool = True, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Deploy environments (POST /code-manager/v1/deploys): one entry per environment.

        With `wait`, the answer comes when the deploy is over, so the read timeout defaults to
        DEPLOY_WAIT_TIMEOUT instead of the client's timeout.
        """
        if timeout is None:
            timeout = max(self.timeout, DEPLOY_WAIT_TIMEOUT) if wait else self.timeout
        answer = self._call(
            "Code Manager",
            CODE_MANAGER_PORT,
            "POST",
            "/code-manager/v1/deploys",
            json={"environments": list(environments), "wait": wait},
            timeout=httpx.Timeout(self.timeout, read=timeout),
        )
        return list(answer or [])

    def deploys_status(self) -> dict[str, Any]:
        """Deploy queue and file-sync state (GET /code-manager/v1/deploys/status)."""
        answer = self._call(
            "Code Manager", CODE_MANAGER_PORT, "GET", "/code-manager/v1/deploys/status"
        )
        return answer if isinstance(answer, dict) else {}

    # --- orchestrator (§3.5) --------------------------------------------------------------------

    def run_puppet(
        self,
        *,
        query: str | None = None,
        nodes: list[str] | None = None,
        environment: str = "",
        enforce_environment: bool = False,
        noop: bool = False,
        description: str | None = None,
    ) -> str:
        """Start a Puppet run job (POST /orchestrator/v1/command/deploy); the job's name (id).

        Exactly one of `query` (PQL) and `nodes` selects the targets.
        """
        if (query is None) == (nodes is None):
            raise ValueError("run_puppet needs exactly one of query= and nodes=")
        scope: dict[str, Any] = {"query": query} if query is not None else {"nodes": nodes}
        body: dict[str, Any] = {
            "environment": environment,
            "enforce_environment": enforce_environment,
            "noop": noop,
            "scope": scope,
        }
        if description is not None:
            body["description"] = description
        answer = self._orchestrator("POST", "/command/deploy", json=body)
        job = answer.get("job") if isinstance(answer, dict) else None
        name = job.get("name") if isinstance(job, dict) else None
        if not name:
            raise PermanentError(
                f"the orchestrator on {self.server} accepted a Puppet run without naming the job"
            )
        return str(name)

    @staticmethod
    def _job_ref(job_id: str | int) -> str:
        # accept the job name ("81") as well as its id URL (".../orchestrator/v1/jobs/81")
        return quote(str(job_id).rstrip("/").rsplit("/", 1)[-1], safe="")

    def job(self, job_id: str | int) -> dict[str, Any]:
        """A job's state and timings (GET /orchestrator/v1/jobs/<id>)."""
        answer = self._orchestrator("GET", f"/jobs/{self._job_ref(job_id)}")
        return answer if isinstance(answer, dict) else {}

    def job_nodes(self, job_id: str | int) -> list[dict[str, Any]]:
        """A job's per-node results (the `items` of GET /orchestrator/v1/jobs/<id>/nodes)."""
        answer = self._orchestrator("GET", f"/jobs/{self._job_ref(job_id)}/nodes")
        return list(answer.get("items") or []) if isinstance(answer, dict) else []

    def inventory(self, nodes: list[str]) -> list[dict[str, Any]]:
        """PCP connection state of `nodes` (the `items` of POST /orchestrator/v1/inventory)."""
        answer = self._orchestrator("POST", "/inventory", json={"nodes": list(nodes)})
        return list(answer.get("items") or []) if isinstance(answer, dict) else []

    # --- status (§3.6) --------------------------------------------------------------------------

    def simple_status(self, port: int = PUPPETSERVER_PORT, service: str | None = None) -> str:
        """`running`, `error` or `unknown` from GET /status/v1/simple[/<service>] (503 included)."""
        path = "/status/v1/simple" + (f"/{quote(service, safe='')}" if service else "")
        response = send(
            self._http,
            "GET",
            self._url(port, path),
            service=self._service("status API", port),
            accept=(503,),
        )
        return response.text.strip()

    def services(self, port: int = PUPPETSERVER_PORT) -> dict[str, Any]:
        """Per-service status (GET /status/v1/services); a 503 answer is returned too."""
        answer = self._call("status API", port, "GET", "/status/v1/services", accept=(503,))
        return answer if isinstance(answer, dict) else {}

    # --- PuppetDB (§3.7) ------------------------------------------------------------------------

    def pdb_query(
        self, endpoint: str, query: list[Any] | str | None = None
    ) -> list[dict[str, Any]]:
        """GET /pdb/query/v4/<endpoint>?query=<AST as JSON>; endpoint "" takes a PQL string."""
        params = {}
        if query is not None:
            params["query"] = query if isinstance(query, str) else json.dumps(query)
        answer = self._call(
            "PuppetDB",
            PUPPETDB_PORT,
            "GET",
            "/pdb/query/v4" + (f"/{endpoint.strip('/')}" if endpoint.strip("/") else ""),
            params=params,
        )
        return list(answer or [])

    def fact(self, certname: str, name: str) -> list[dict[str, Any]]:
        """The rows of one fact of one node (GET /pdb/query/v4/facts; puppetdb
        documentation/api/query/v4/facts.markdown: `certname`, `name`, `value`, `environment`)."""
        return self.pdb_query("facts", ["and", ["=", "certname", certname], ["=", "name", name]])

    def report(self, report_hash: str) -> dict[str, Any] | None:
        """The report with this hash (`hash` is a report's identity in PuppetDB:
        documentation/api/query/v4/reports.markdown), or None."""
        rows = self.pdb_query("reports", ["=", "hash", report_hash])
        return rows[0] if rows else None

    def reports_after(self, certname: str, receive_time: str | None) -> list[dict[str, Any]]:
        """`certname`'s reports PuppetDB received after `receive_time` (all when None), oldest
        first. PuppetDB stores commands asynchronously, so right after a run the newest report
        can still be the one before (real-world-findings §4.1 row 5)."""
        query: list[Any] = ["=", "certname", certname]
        if receive_time:
            query = ["and", query, [">", "receive_time", receive_time]]
        rows = self.pdb_query("reports", query)
        return sorted(rows, key=lambda r: str(r.get("receive_time", "")))

    def reports_since(
        self, producer_time: str, *, excluding: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """The reports of runs that ended after `producer_time` (ISO 8601), of every node but
        `excluding`, oldest first: `certname`, `status`, `producer` (the server that compiled
        the run) and `producer_timestamp` (reports.markdown; `in` an `array`: ast.markdown)."""
        query: list[Any] = [">", "producer_timestamp", producer_time]
        names = sorted(set(excluding))
        if names:
            query = ["and", query, ["not", ["in", "certname", ["array", names]]]]
        rows = self.pdb_query("reports", query)
        return sorted(rows, key=lambda r: str(r.get("producer_timestamp", "")))

    def pdb_metric(self, name: str) -> float | None:
        """A `puppetlabs.puppetdb.ha` metric through PuppetDB's metrics v2 (Jolokia) API, e.g.
        `seconds-since-last-successful-sync` (puppetdb documentation/ha.markdown, "Metrics");
        None when PuppetDB does not have it."""
        answer = self._call(
            "PuppetDB metrics",
            PUPPETDB_PORT,
            "GET",
            f"/metrics/v2/read/puppetlabs.puppetdb.ha:name={quote(name, safe='-')}",
            accept=(404,),
        )
        value = answer.get("value") if isinstance(answer, dict) else None
        if isinstance(value, dict):
            value = value.get("Value")
        return float(value) if isinstance(value, int | float) else None

    def latest_report(self, certname: str) -> dict[str, Any] | None:
        """The latest report of `certname` (incl. `producer`, `configuration_version`), or None."""
        reports = self.pdb_query(
            "reports", ["and", ["=", "certname", certname], ["=", "latest_report?", True]]
        )
        return reports[0] if reports else None


def _created_id(response: httpx.Response, server: str, what: str) -> str:
    """The id at the end of the Location a 303 (or 201) names."""
    location = response.headers.get("location", "").rstrip("/")
    ident = location.rsplit("/", 1)[-1] if location else ""
    if not ident:
        raise PermanentError(f"{server} created a {what} without saying where (no Location)")
    return ident
