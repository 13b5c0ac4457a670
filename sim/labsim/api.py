"""HTTP APIs: PE (status, RBAC, classifier, Code Manager, orchestrator, PuppetDB, Puppet Server)
and GitLab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import re
import secrets
import ssl
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import asyncssh

from labsim import commands, http
from labsim.http import Request, Response
from labsim.state import ADMIN_ID, ROLES, now_iso

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


def handler_for(lab: Lab, vm: VM, port: int) -> http.Handler:
    async def handle(req: Request) -> Response:
        if vm.role == "gitlab":
            return await gitlab(lab, vm, req)
        return await pe_handle(lab, vm, port, req)

    return handle


def _err(status: int, kind: str, msg: str) -> Response:
    return Response.json({"kind": kind, "msg": msg}, status)


def _token_invalid() -> Response:
    return _err(
        401,
        "puppetlabs.rbac/token-invalid",
        "Authentication is required to access this resource: the token is invalid, "
        "expired or revoked.",
    )


SERVICE_OPS = [
    ("/pcp", 8142, "api.pcp-broker"),
    ("/rbac-api/", 4433, "api.rbac"),
    ("/classifier-api/", 4433, "api.classifier"),
    ("/code-manager/", 8170, "api.code-manager"),
    ("/orchestrator/", 8143, "api.orchestrator"),
    ("/pdb/", 8081, "api.puppetdb"),
    ("/metrics/", 8081, "api.puppetdb"),
    ("/puppet/", 8140, "api.puppetserver"),
    ("/status/", 0, "api.status"),
]


async def pe_handle(lab: Lab, vm: VM, port: int, req: Request) -> Response:
    path = req.path
    op = next(
        (o for prefix, p, o in SERVICE_OPS if path.startswith(prefix) and (p in (0, port))), None
    )
    if port == 443 and op is None:
        return Response(
            200, b"<html><title>Puppet Enterprise</title></html>", {"Content-Type": "text/html"}
        )
    if op is None:
        return _err(404, "not-found", f"not found: {path}")
    detail = f"{req.method} {req.raw_path}"
    lab.replication.record(lab)
    if lab.fault(op, vm.name, detail):
        return _err(
            503,
            "puppetlabs.labsim/service-unavailable",
            f"{op} is temporarily unavailable (injected fault)",
        )
    try:
        if op == "api.pcp-broker":
            # wss://host:8142/pcp and /pcp2 (reference §3.1): agents' pxp-agent connections are
            # WebSockets; a plain request is refused
            resp = _err(400, "puppetlabs.pcp/websocket-required", "expected a WebSocket upgrade")
        elif op == "api.status":
            resp = status_api(lab, vm, port, req)
        elif op == "api.rbac":
            resp = rbac(lab, vm, req)
        elif op == "api.classifier":
            resp = classifier(lab, vm, req)
        elif op == "api.code-manager":
            resp = await code_manager(lab, vm, req)
        elif op == "api.orchestrator":
            resp = await orchestrator(lab, vm, req)
        elif op == "api.puppetdb":
            resp = puppetdb(lab, vm, req)
        else:
            resp = puppetserver(lab, vm, req)
    except (ValueError, KeyError, TypeError) as exc:
        resp = _err(400, "malformed-request", f"malformed request: {exc}")
    lab.replication.record(lab)  # a write is stamped with its own time
    if op not in ("api.puppetserver",):
        outcome = (
            "ok" if resp.status < 400 else ("refused" if resp.status in (401, 403) else "failed")
        )
        lab.journal(vm.name, op, outcome, f"{detail} -> {resp.status}")
    return resp


def _orchestrator_inactive(lab: Lab, vm: VM) -> bool:
    """The replicated orchestrator on an enabled replica is inactive until promotion."""
    pe = lab.pe
    return bool(pe and vm.name == pe.replica and not pe.promoted)


def _alerts(lab: Lab, vm: VM, service: str) -> list[dict[str, str]]:
    """`active_alerts` of a service (PDF-2021.7.1 p.436-440); the same alerts as
    `puppet infrastructure status` (commands.status_entries)."""
    pe = lab.pe
    if pe is None:
        return []
    labels = {
        "classifier-service": "Classifier",
        "rbac-service": "RBAC",
        "activity-service": "Activity",
        "orchestrator-service": "Orchestrator",
    }
    inactive = pe.replica and lab.faults.has("db-replication-inactive")
    store = {"classifier-service": "classifier", "rbac-service": "rbac"}.get(service)
    if store and pe.replica and lab.faults.has_store(store, "broken"):
        inactive = True
    if vm.name == pe.primary and inactive and service in labels:
        return [
            {
                "severity": "error",
                "message": f"Database replication for {labels[service]} is inactive",
            }
        ]
    unhealthy = lab.faults.has("replica-unhealthy")
    if vm.name == pe.replica and service == "puppetdb-status" and unhealthy:
        return [
            {
                "severity": "error",
                "message": f"PuppetDB on {vm.name} cannot sync with {pe.primary} "
                "(labsim fault replica:unhealthy)",
            }
        ]
    return []


def _service_status(lab: Lab, vm: VM, service: str) -> dict[str, Any]:
    """A service's `status`: database replication `{mode, status}` on the classifier and RBAC
    services (PDF-2021.7.1 p.436-440; peadm spec/fixtures/infrastatus.json), PuppetDB's
    `sync_status.state` (same fixture: `idle`)."""
    pe = lab.pe
    if pe is not None and service == "puppetdb-status":
        return lab.puppetdb.status(lab, vm)[1]
    if pe is None or not pe.replica or not pe.replica_enabled or pe.promoted:
        return {}
    store = {"classifier-service": "classifier", "rbac-service": "rbac"}.get(service)
    mode = "source" if vm.name == pe.primary else "replica"
    if store:
        return {"replication": {"mode": mode, "status": lab.replication.status(lab, store)}}
    return {}


def _pdb_alerts(lab: Lab, vm: VM, service: str) -> list[dict[str, str]]:
    if service != "puppetdb-status" or lab.pe is None:
        return []
    return lab.puppetdb.status(lab, vm)[2]


def status_api(lab: Lab, vm: VM, port: int, req: Request) -> Response:
    """GET /status/v1/simple[/<svc>] and /status/v1/services[/<svc>] (PDF-2021.7.1 p.436-441):
    200 only when every service is `running`, 503 otherwise; alerts do not change a state."""
    path = req.path
    if port in (4433, 8081) and not _infra_cert(lab, req):
        # the status of console-services and PuppetDB answers PE's own servers' certificates;
        # whether it answers anyone else is not documented: labsim refuses (the stricter answer)
        return _err(403, "puppetlabs.trapperkeeper/forbidden", "Forbidden: no allowed certificate")
    names = {
        8140: ["server", "file-sync-client-service"]
        + (
            ["code-manager-service", "file-sync-storage-service"]
            if lab.pe and vm.name == lab.pe.primary
            else []
        ),
        4433: ["rbac-service", "classifier-service", "activity-service"],
        8143: ["orchestrator-service", "broker-service"],
        8081: ["puppetdb-status"],
        8170: ["code-manager-service"],
        443: ["rbac-service", "classifier-service", "activity-service"],
    }.get(port, [])

    def state(name: str) -> str:
        if name == "orchestrator-service" and _orchestrator_inactive(lab, vm):
            return "unknown"
        if name == "puppetdb-status":
            if lab.puppetdb_starting(vm):
                return "starting"
            return lab.puppetdb.status(lab, vm)[0]
        return "running"

    if path.startswith("/status/v1/simple"):
        rest = path[len("/status/v1/simple") :].strip("/")
        if rest and rest not in names and rest != "server":
            return Response.text(f"not found: {rest}", 404)
        states = [state(rest)] if rest else [state(n) for n in names]
        worst = next((s for s in states if s != "running"), "running")
        return Response.text(worst, 200 if worst == "running" else 503)
    if path.startswith("/status/v1/services"):
        rest = path[len("/status/v1/services") :].strip("/")
        out = {}
        for n in names:
            out[n] = {
                "service_version": "2025.8.0",
                "service_status_version": 1,
                "detail_level": req.query.get("level", "info"),
                "state": state(n),
                "status": _service_status(lab, vm, n),
                "active_alerts": _alerts(lab, vm, n) + _pdb_alerts(lab, vm, n),
            }
        code = 200 if all(e["state"] == "running" for e in out.values()) else 503
        if rest:
            if rest not in out:
                return _err(404, "service-not-found", f"No status information for '{rest}'")
            return Response.json(out[rest], 200 if out[rest]["state"] == "running" else 503)
        return Response.json(out, code)
    return _err(404, "not-found", path)


def _auth(lab: Lab, req: Request, vm: VM | None = None) -> dict[str, Any] | None:
    """The caller: an allowlisted host certificate acts for PE itself; else the RBAC token's user.

    On the replica, while the primary is down, whether its RBAC still accepts a token is not
    documented (real-world-findings §4.1 row 2): labsim refuses it (the stricter answer) unless
    the fault `replica:accepts-tokens` gives the other one."""
    pe = lab.pe
    if pe is None:
        return None
    if _infra_cert(lab, req):
        return pe.users.get(ADMIN_ID)
    token = req.headers.get("x-authentication") or req.query.get("token")
    if vm is not None and _on_replica_alone(lab, vm) and not lab.faults.has("replica-tokens"):
        return None
    return pe.token_user(token)


def _infra_cert(lab: Lab, req: Request) -> bool:
    """A client certificate of one of PE's own servers: PE puts the certnames of its primary and
    replica on the allowlists of PuppetDB (`certificate-allowlist`), of RBAC and the classifier
    (`rbac-certificate-allowlist`) and of the status API (PE module profile/puppetdb.pp,
    profile/console.pp; real-world-findings §4.1 rows 1-2, §4.4)."""
    pe = lab.pe
    return (
        pe is not None
        and req.client_cert is not None
        and req.client_cert in {pe.primary, pe.replica}
    )


def _on_replica_alone(lab: Lab, vm: VM) -> bool:
    """`vm` is an enabled replica whose primary does not serve (the outage a drill makes)."""
    pe = lab.pe
    return bool(
        pe is not None
        and pe.replica == vm.name
        and pe.replica_enabled
        and not pe.promoted
        and not lab.vms[pe.primary].serving
    )


def _rbac_write_refused(lab: Lab, vm: VM, caller: Any) -> Response | None:
    """Why RBAC refuses a write here, if it does: a replica's RBAC is read-only; only an
    administrator creates users and roles."""
    assert lab.pe is not None
    if _read_only(lab, vm):
        return _err(403, "puppetlabs.rbac/read-only", "RBAC is read-only on a replica")
    if not lab.pe.is_admin(caller):
        return _err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
    return None


def _read_only(lab: Lab, vm: VM) -> bool:
    return lab.pe is not None and vm.name != lab.pe.primary


def _rbac_data(lab: Lab, vm: VM) -> dict[str, Any]:
    """What RBAC serves on `vm`: the primary's own, or the replica's replicated copy."""
    pe = lab.pe
    assert pe is not None
    if _read_only(lab, vm) and pe.replica_enabled and not pe.promoted:
        return lab.replication.view(lab, "rbac")
    return {"users": pe.users, "role_members": pe.role_members, "roles": pe.custom_roles}


def _groups(lab: Lab, vm: VM) -> list[dict[str, Any]]:
    """The node groups the classifier serves on `vm` (the replica's replicated copy there)."""
    pe = lab.pe
    assert pe is not None
    if _read_only(lab, vm) and pe.replica_enabled and not pe.promoted:
        groups = list(lab.replication.view(lab, "classifier").get("groups", []))
        for n, group in enumerate(groups):
            for key, value in lab.replica_group_edits.get(group["id"], {}).items():
                merged = dict(group.get(key) or {})
                _merge(merged, value)
                groups[n] = {**groups[n], key: merged}
        return groups
    return pe.groups


def _public_user(u: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in u.items() if k != "password"}


def rbac(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    path, m = req.path, req.method
    if path == "/rbac-api/v1/auth/token" and m == "POST":
        body = req.json()
        user = pe.user_by_login(body.get("login", ""))
        if user is None or user.get("password") != body.get("password") or user["is_revoked"]:
            return _err(
                401,
                "puppetlabs.rbac/authentication-failed",
                "The provided login or password is invalid.",
            )
        return Response.json({"token": pe.issue_token(user, body.get("label", ""))})
    if path == "/rbac-api/v2/auth/token/authenticate" and m == "POST":
        # 400 for a malformed token, 403 for a revoked, expired or unknown one; no caller
        # authentication (help.puppet.com/pe/2023.8/topics/rbac_api_v2_auth_token_auth_post.htm)
        token = req.json().get("token")
        if not isinstance(token, str) or not re.fullmatch(r"[0-9A-Za-z_-]{20,}", token.strip()):
            return _err(400, "puppetlabs.rbac/malformed-token", "The token is malformed.")
        user = pe.token_user(token)
        if user is None:
            return _err(
                403, "puppetlabs.rbac/token-revoked", "The token is revoked, expired or unknown."
            )
        return Response.json(
            {
                "login": user["login"],
                "id": user["id"],
                "role_ids": sorted(pe.user_roles(user)),
                "display_name": user["display_name"],
            }
        )
    if path == "/rbac-api/v1/auth/reset" and m == "POST":
        body = req.json()
        uid = pe.reset_tokens.pop(body.get("token", ""), None)
        if uid is None:
            return _err(403, "puppetlabs.rbac/invalid-token", "The reset token is invalid or used.")
        pe.users[uid]["password"] = body.get("password", "")
        return Response.json(_public_user(pe.users[uid]))
    caller = _auth(lab, req, vm)
    if caller is None:
        return _token_invalid()
    data = _rbac_data(lab, vm)
    if path in ("/rbac-api/v1/users", "/rbac-api/v2/users") and m == "GET":
        members: dict[Any, list[str]] = data["role_members"]
        users = [_public_user(u) for u in data["users"].values()]
        for u in users:
            u["role_ids"] = sorted(int(r) for r, ids in members.items() if u["id"] in ids)
        if path.startswith("/rbac-api/v2"):
            f = req.query.get("filter", "").strip('"')
            return Response.json({"users": [u for u in users if f in u["login"]]})
        return Response.json(users)
    if re.fullmatch(r"/rbac-api/v1/users/[^/]+", path) and m == "GET":
        found = pe.users.get(path.rsplit("/", 1)[1])
        return (
            Response.json(_public_user(found)) if found else _err(404, "not-found", "no such user")
        )
    if path == "/rbac-api/v1/users" and m == "POST":
        refused = _rbac_write_refused(lab, vm, caller)
        if refused is not None:
            return refused
        body = req.json()
        login = body.get("login", "")
        if not login:
            return _err(400, "malformed-request", "login is required")
        if pe.user_by_login(login) or (
            body.get("email") and any(u["email"] == body.get("email") for u in pe.users.values())
        ):
            return _err(409, "conflict", f"A user with login '{login}' already exists.")
        uid = str(uuid.uuid4())
        pe.users[uid] = {
            "id": uid,
            "login": login,
            "email": body.get("email", ""),
            "display_name": body.get("display_name", login),
            "role_ids": [],
            "is_superuser": False,
            "is_revoked": False,
            "is_remote": False,
            "is_group": False,
            "last_login": None,
            "password": body.get("password"),
        }
        for rid in body.get("role_ids", []):
            pe.role_members.setdefault(int(rid), []).append(uid)
        return Response(201, b"", {"Location": f"/rbac-api/v1/users/{uid}"})
    if path == "/rbac-api/v1/roles" and m == "GET":
        roles = []
        for r in ROLES:
            roles.append(
                {
                    **r,
                    "permissions": [],
                    "user_ids": list(
                        data["role_members"].get(r["id"], data["role_members"].get(str(r["id"])))
                        or []
                    ),
                    "group_ids": [],
                }
            )
        roles += list(data["roles"].values())
        return Response.json(roles)
    if path == "/rbac-api/v1/roles" and m == "POST":
        # POST /roles: 201 Created, Location the new role (DA-2018.1 rbac_api_v1_user_role.md)
        refused = _rbac_write_refused(lab, vm, caller)
        if refused is not None:
            return refused
        body = req.json()
        name = body.get("display_name", "")
        taken = {r["display_name"] for r in ROLES} | {
            r["display_name"] for r in pe.custom_roles.values()
        }
        if not name or name in taken:
            return _err(409, "conflict", f"A role named {name!r} already exists.")
        rid = max([r["id"] for r in ROLES] + [r["id"] for r in pe.custom_roles.values()]) + 1
        pe.custom_roles[str(rid)] = {
            "id": rid,
            "display_name": name,
            "description": body.get("description", ""),
            "permissions": list(body.get("permissions", [])),
            "user_ids": list(body.get("user_ids", [])),
            "group_ids": list(body.get("group_ids", [])),
        }
        return Response(201, b"", {"Location": f"/rbac-api/v1/roles/{rid}"})
    mm = re.fullmatch(r"/rbac-api/v1/roles/(\d+)", path)
    if mm and m == "GET":
        found = data["roles"].get(mm.group(1))
        return Response.json(found) if found else _err(404, "not-found", "no such role")
    if mm and m == "PUT":
        # PUT /roles/<rid>: replaces the role with the body, 200 with the role (DA-2018.1
        # rbac_api_v1_user_role.md, "PUT /roles/<rid>"); the id in the body must match
        refused = _rbac_write_refused(lab, vm, caller)
        if refused is not None:
            return refused
        role = pe.custom_roles.get(mm.group(1))
        if role is None:
            return _err(404, "not-found", "no such role")
        body = req.json()
        if str(body.get("id")) != mm.group(1):
            return _err(400, "malformed-request", "the role's id does not match the URL")
        for key in ("display_name", "description", "permissions", "user_ids", "group_ids"):
            if key in body:
                role[key] = body[key]
        return Response.json(role)
    if mm and m == "DELETE":
        refused = _rbac_write_refused(lab, vm, caller)
        if refused is not None:
            return refused
        if pe.custom_roles.pop(mm.group(1), None) is None:
            return _err(404, "not-found", "no such role")
        return Response(200)  # DELETE /roles/<rid>: 200 OK (same source)
    if path == "/rbac-api/v1/command/roles/add-users" and m == "POST":
        if _read_only(lab, vm) or not pe.is_admin(caller):
            return _err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
        body = req.json()
        rid = int(body["role_id"])
        if rid not in pe.role_members:
            return _err(404, "not-found", "no such role")
        for uid in body.get("user_ids", []):
            if uid not in pe.users:
                return _err(404, "not-found", f"no such user {uid}")
            if uid not in pe.role_members[rid]:
                pe.role_members[rid].append(uid)
        return Response(204)
    if path == "/rbac-api/v1/command/users/add-roles" and m == "POST":
        if _read_only(lab, vm) or not pe.is_admin(caller):
            return _err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
        body = req.json()
        for rid in body.get("role_ids", []):
            pe.role_members.setdefault(int(rid), []).append(body["user_id"])
        return Response(204)
    mm = re.fullmatch(r"/rbac-api/v1/users/([^/]+)/password/reset", path)
    if mm and m == "POST":
        if _read_only(lab, vm) or not pe.is_admin(caller):
            return _err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
        if mm.group(1) not in pe.users:
            return _err(404, "not-found", "no such user")
        tok = secrets.token_urlsafe(24)
        pe.reset_tokens[tok] = mm.group(1)
        return Response(201, tok.encode(), {"Content-Type": "text/plain"})
    if path == "/rbac-api/v1/tokens" and m == "POST":
        return Response.json({"token": pe.issue_token(caller, req.json().get("description", ""))})
    return _err(404, "not-found", f"no route {m} {path}")


# The parameters of the PE classes the drill classifies, from PE's documentation of them
# (PDF-2021.7.1 p.271-277, p.794-795; reference §3.3). A delta naming another parameter is refused
# with 422 missing-referents, as PE's classifier refuses one the installed class lacks
# (DA-2018.1 groups_endpoint.md). Classes not listed here accept any parameter.
CLASS_PARAMETERS: dict[str, frozenset[str]] = {
    "puppet_enterprise::profile::master": frozenset(
        {
            "code_manager_auto_configure",
            "r10k_remote",
            "r10k_private_key",
            "r10k_known_hosts",
            "r10k_proxy",
            "r10k_git_provider",
            "r10k_postrun",
            "replication_mode",
            "versioned_deploys",
            "file_sync_enabled",
            "provisioned_replicas",
            "classifier_client_certname",
            "classifier_host",
            "classifier_port",
            "puppetdb_host",
            "puppetdb_port",
            "sync_allowlist",
            "sync_peers",
        }
    ),
    "puppet_enterprise::profile::agent": frozenset(
        {
            "manage_puppet_conf",
            "pcp_broker_list",
            "pcp_broker_ws_uris",
            "primary_uris",
            "server_list",
            "master_uris",
        }
    ),
}


def _missing_referents(group: dict[str, Any], classes: dict[str, Any]) -> list[dict[str, str]]:
    missing = []
    for cls, params in classes.items():
        known = CLASS_PARAMETERS.get(cls)
        if known is None or not isinstance(params, dict):
            continue
        for name, value in params.items():
            if value is not None and name not in known:
                missing.append(
                    {
                        "object": group["id"],
                        "referent": cls,
                        "kind": "missing-parameter",
                        "missing": name,
                        "environment": group.get("environment", "production"),
                    }
                )
    return missing


def classifier(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    if _auth(lab, req, vm) is None:
        return _token_invalid()
    path, m = req.path, req.method
    if path == "/classifier-api/v1/groups" and m == "GET":
        return Response.json(_groups(lab, vm))
    if path == "/classifier-api/v1/groups" and m == "POST":
        # POST /v1/groups: the classifier picks the id; 303 See Other, Location the new group
        # (DA-2018.1 groups_endpoint.md)
        if _read_only(lab, vm):
            return _err(403, "read-only", "The classifier is read-only on a replica.")
        body = req.json()
        if not body.get("name") or not body.get("parent") or "classes" not in body:
            return _err(400, "schema-violation", "name, parent and classes are required")
        if any(x["name"] == body["name"] for x in pe.groups):
            return _err(422, "uniqueness-violation", f"A group named {body['name']!r} exists.")
        if not any(x["id"] == body["parent"] for x in pe.groups):
            return _err(422, "missing-parent", f"The parent {body['parent']} does not exist.")
        gid = str(uuid.uuid4())
        pe.groups.append(
            {
                "name": body["name"],
                "id": gid,
                "description": body.get("description", ""),
                "environment": body.get("environment", "production"),
                "environment_trumps": bool(body.get("environment_trumps", False)),
                "parent": body["parent"],
                "rule": body.get("rule"),
                "classes": body.get("classes") or {},
                "config_data": body.get("config_data") or {},
                "variables": body.get("variables") or {},
                "deleted": {},
                "last_edited": now_iso(),
                "serial_number": 1,
            }
        )
        return Response(303, b"", {"Location": f"/classifier-api/v1/groups/{gid}"})
    mm = re.fullmatch(r"/classifier-api/v1/groups/([0-9a-f-]+)", path)
    if mm:
        g = next((x for x in _groups(lab, vm) if x["id"] == mm.group(1)), None)
        if g is None:
            return _err(404, "not-found", f"The group with id {mm.group(1)} does not exist.")
        if m == "GET":
            return Response.json(g)
        if m == "DELETE":
            # DELETE /v1/groups/<id>: 204; refused while it has children (groups_endpoint.md)
            if _read_only(lab, vm):
                return _classification_edit_refused(lab)
            if any(x["parent"] == g["id"] and x["id"] != g["id"] for x in pe.groups):
                return _err(422, "children-present", "The group has children.")
            pe.groups = [x for x in pe.groups if x["id"] != g["id"]]
            return Response(204)
        if m == "POST":
            if _read_only(lab, vm):
                if lab.faults.has("replica-classifier-writable"):
                    return _replica_edit(lab, g, req.json())
                return _classification_edit_refused(lab)
            delta = req.json()
            if "serial_number" in delta and delta["serial_number"] != g["serial_number"]:
                return _err(409, "conflict", "serial number mismatch")
            missing = _missing_referents(g, delta.get("classes") or {})
            if missing:
                names = ", ".join(f"{m['referent']}::{m['missing']}" for m in missing)
                return Response.json(
                    {
                        "kind": "missing-referents",
                        "msg": f"The group {g['name']!r} refers to class parameters that do not "
                        f"exist in environment 'production': {names}",
                        "details": missing,
                    },
                    422,
                )
            for key in ("classes", "config_data", "variables"):
                if key in delta:
                    _merge(g.setdefault(key, {}), delta[key])
            for key in ("name", "environment", "description", "parent", "rule"):
                if key in delta:
                    g[key] = delta[key]
            g["serial_number"] += 1
            g["last_edited"] = now_iso()
            return Response.json(g)
    return _err(404, "not-found", f"no route {m} {path}")


def _classification_edit_refused(lab: Lab) -> Response:
    """A classification edit on a replica. PE documents that it "doesn't work" during failover
    but not the answer (PDF-2021.7.1 p.269; real-world-findings §4.1 row 3): labsim answers one
    that does not say why (the stricter answer: a drill cannot take it as proof), and the fault
    `replica:says-read-only` the answer that names the read-only replica."""
    if lab.faults.has("replica-says-read-only"):
        return _err(
            403,
            "puppetlabs.classifier/read-only",
            "The node classifier on a replica is read-only; edit classification on the primary.",
        )
    return _err(403, "puppetlabs.rbac/permission-denied", "Permission denied")


def _replica_edit(lab: Lab, group: dict[str, Any], delta: dict[str, Any]) -> Response:
    """`replica:classifier-writable`: a replica that accepts an edit (what a drill must catch);
    the edit lives on the replica's copy only."""
    edits = lab.replica_group_edits.setdefault(group["id"], {})
    for key in ("classes", "config_data", "variables"):
        if key in delta:
            _merge(edits.setdefault(key, {}), delta[key])
    edited = dict(group)
    for key, value in edits.items():
        merged = dict(edited.get(key) or {})
        _merge(merged, value)
        edited[key] = merged
    return Response.json(edited)


def _merge(target: dict[str, Any], delta: dict[str, Any]) -> None:
    for k, v in delta.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


async def code_manager(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    path, m = req.path, req.method
    if path == "/code-manager/v1/webhook" and m == "POST":
        typ = req.query.get("type", "")
        if typ != "gitlab":
            return _err(
                400,
                "puppetlabs.code-manager/unrecognized-webhook-type",
                f"Unrecognized webhook type: '{typ}'",
            )
        user = pe.token_user(req.query.get("token"))
        if user is None or not pe.can_deploy(user):
            return _token_invalid()
        body = req.json()
        ref = body.get("ref", "")
        env = ref.rsplit("/", 1)[-1]
        if env:
            lab.spawn(lab.deploy(vm, env, user["login"]))
        return Response.json({"status": "OK", "environments": [env]})
    user = _auth(lab, req)
    if user is None:
        return _token_invalid()
    if path == "/code-manager/v1/deploys" and m == "POST":
        if not pe.can_deploy(user):
            return _err(
                403,
                "puppetlabs.rbac/permission-denied",
                "You are not authorized to deploy this environment",
            )
        body = req.json()
        envs = body.get("environments") or []
        if body.get("deploy-all") or body.get("dry-run"):
            envs = sorted(set(envs) | _branches(lab)) or ["production"]
        if body.get("dry-run"):
            return Response.json([{"environment": e} for e in envs])
        if body.get("wait"):
            results = await asyncio.gather(*(lab.deploy(vm, e, user["login"]) for e in envs))
            return Response.json([dict(r) for r in results])
        recs = []
        for e in envs:
            lab.spawn(lab.deploy(vm, e, user["login"]))
            recs.append({"environment": e, "id": pe.deploy_seq + 1, "status": "queued"})
        return Response.json(recs)
    if path == "/code-manager/v1/deploys/status" and m == "GET":
        if "id" in req.query:
            d = pe.deploys.get(int(req.query["id"]))
            if d is None:
                return _err(404, "not-found", "no such deploy")
            st = d["status"]
            if st == "complete":
                st = "synced"
            return Response.json(
                {
                    "environment": d["environment"],
                    "id": d["id"],
                    "status": st,
                    "queued-at": d["queued-at"],
                }
            )
        clients = {}
        for server, envs_ in pe.clients.items():
            clients[server] = {
                "last_check_in_time": now_iso(),
                "synced-with-file-sync-storage": all(
                    envs_.get(e, {}).get("deploy-signature") == s["deploy-signature"]
                    for e, s in pe.storage.items()
                ),
                "deployed": [{"environment": e, **v} for e, v in envs_.items()],
            }
        if pe.replica and pe.replica not in clients:
            clients[pe.replica] = {
                "last_check_in_time": None,
                "synced-with-file-sync-storage": False,
                "deployed": [],
            }
        return Response.json(
            {
                "deploys-status": {
                    "new": [],
                    "queued": [],
                    "deploying": [d for d in pe.deploys.values() if d["status"] == "deploying"],
                    "failed": [d for d in pe.deploys.values() if d["status"] == "failed"][-10:],
                },
                "file-sync-storage-status": {
                    "deployed": [{"environment": e, **v} for e, v in pe.storage.items()]
                },
                "file-sync-client-status": {
                    "all-synced": all(c["synced-with-file-sync-storage"] for c in clients.values()),
                    "file-sync-clients": clients,
                },
            }
        )
    return _err(404, "not-found", f"no route {m} {path}")


def _branches(lab: Lab) -> set[str]:
    pe = lab.pe
    assert pe is not None
    remote = pe.master_params().get("r10k_remote", "")
    path = remote.split(":", 1)[-1].removesuffix(".git")
    heads = lab.repo_path(path) / "refs" / "heads" if path else None
    if heads and heads.exists():
        return {p.name for p in heads.iterdir()}
    return set()


def next_job_id(lab: Lab) -> int:
    pe = lab.pe
    assert pe is not None
    pe.job_seq += 1
    return pe.job_seq


async def run_job(
    lab: Lab, nodes: list[str], noop: bool, user: Any, jid: int | None = None
) -> dict[str, Any]:
    """Run job `jid` (a new id when None) on `nodes` to its end."""
    pe = lab.pe
    assert pe is not None
    if jid is None:
        jid = next_job_id(lab)
    job: dict[str, Any] = {
        "id": jid,
        "name": str(jid),
        "state": "running",
        "type": "deploy",
        "options": {"noop": noop, "enforce_environment": False, "environment": ""},
        "node_count": len(nodes),
        "owner": {"login": user["login"] if user else ""},
        "started_timestamp": now_iso(),
        "finished_timestamp": None,
        "duration": None,
        "status": [
            {"state": "new", "enter_time": now_iso(), "exit_time": now_iso()},
            {"state": "running", "enter_time": now_iso(), "exit_time": None},
        ],
        "nodes": [],
    }
    pe.jobs[jid] = job
    t0 = time.monotonic()

    async def one(name: str) -> dict[str, Any]:
        vm = lab.vm_by_host(name)
        start = now_iso()
        if vm is None or not vm.serving or not vm.installed:
            return {
                "name": name,
                "state": "failed",
                "start_timestamp": start,
                "finish_timestamp": now_iso(),
                "duration": 0.0,
                "details": {"message": f"Node {name} is not connected to the PCP broker"},
                "result": None,
            }
        rc, out, err = await commands.agent_run(lab, vm, noop, None)
        lab.journal(
            vm.name,
            "puppet.agent",
            "ok" if rc in (0, 2) else "failed",
            f"orchestrator job {jid}: puppet agent run" + (" --noop" if noop else ""),
        )
        m = re.search(r"Applying configuration version '([^']+)'", out)
        state = "finished" if rc in (0, 2) else "failed"
        return {
            "name": vm.name,
            "state": state,
            "start_timestamp": start,
            "finish_timestamp": now_iso(),
            "duration": 1.0,
            "details": {
                "message": "Finished puppet run"
                if state == "finished"
                else re.sub(r"\x1b\[[0-9;]*m", "", err).strip().splitlines()[-1]
                if err.strip()
                else "failed"
            },
            "result": {
                "status": "changed" if rc == 2 else ("unchanged" if rc == 0 else "failed"),
                "environment": "production",
                "configuration_version": m.group(1) if m else None,
                "metrics": {},
            },
        }

    job["nodes"] = list(await asyncio.gather(*(one(n) for n in nodes)))
    failed = any(n["state"] != "finished" for n in job["nodes"]) or not nodes
    job["state"] = "failed" if failed else "finished"
    job["finished_timestamp"] = now_iso()
    job["duration"] = round(time.monotonic() - t0, 3)
    job["status"][-1]["exit_time"] = now_iso()
    job["status"].append({"state": job["state"], "enter_time": now_iso(), "exit_time": None})
    lab.journal(
        "",
        "orchestrator.job",
        "ok" if not failed else "failed",
        f"job {jid}: {len(nodes)} nodes, state {job['state']}",
    )
    return job


async def orchestrator(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    if _orchestrator_inactive(lab, vm):
        return _err(
            503,
            "puppetlabs.orchestrator/service-unavailable",
            f"The orchestrator on {vm.name} is not active: it serves only after the replica "
            "is promoted.",
        )
    user = _auth(lab, req)
    if user is None:
        return _token_invalid()
    path, m = req.path, req.method
    base = f"https://{vm.name}:8143/orchestrator/v1"
    if path == "/orchestrator/v1/command/deploy" and m == "POST":
        body = req.json()
        scope = body.get("scope") or {}
        env = body.get("environment")
        if env is None:
            return _err(400, "puppetlabs.orchestrator/validation-error", "environment is required")
        if env == "" and body.get("enforce_environment", True):
            return _err(
                400,
                "puppetlabs.orchestrator/empty-environment",
                "environment must be given when enforce_environment is true",
            )
        if "nodes" in scope:
            nodes = list(scope["nodes"])
        elif "query" in scope or "node_group" in scope:
            nodes = list(pe.nodes)
        else:
            return _err(400, "puppetlabs.orchestrator/empty-target", "no target")
        if not nodes:
            return _err(400, "puppetlabs.orchestrator/empty-target", "the target is empty")
        jid = next_job_id(lab)  # answered now, whenever the job's task first runs
        lab.spawn(run_job(lab, nodes, bool(body.get("noop")), user, jid))
        await asyncio.sleep(0)
        return Response.json({"job": {"id": f"{base}/jobs/{jid}", "name": str(jid)}}, 202)
    mm = re.fullmatch(r"/orchestrator/v1/jobs/(\d+)(/nodes)?", path)
    if mm and m == "GET":
        job = pe.jobs.get(int(mm.group(1)))
        if job is None:
            return _err(404, "puppetlabs.orchestrator/unknown-job", "no such job")
        if mm.group(2):
            items = job["nodes"]
            if "state" in req.query:
                items = [n for n in items if n["state"] == req.query["state"]]
            return Response.json({"items": items, "next-events": {"id": "1", "event": "1"}})
        out = {k: v for k, v in job.items() if k != "nodes"}
        out["id"] = f"{base}/jobs/{job['id']}"
        out["nodes"] = {"id": f"{base}/jobs/{job['id']}/nodes"}
        return Response.json(out)
    if path in ("/orchestrator/v1/inventory",) and m in ("GET", "POST"):
        names = req.json().get("nodes", pe.nodes) if m == "POST" else pe.nodes
        items = []
        for n in names:
            nvm = lab.vm_by_host(n)
            conn = bool(nvm and nvm.serving and nvm.installed and nvm.name in pe.nodes)
            items.append(
                {
                    "name": n,
                    "connected": conn,
                    "broker": f"pcp://{pe.primary}/server" if conn else None,
                    "timestamp": now_iso() if conn else None,
                }
            )
        return Response.json({"items": items})
    return _err(404, "not-found", f"no route {m} {path}")


def _pdb_auth(lab: Lab, vm: VM, req: Request) -> Response | None:
    """Who may query PuppetDB on `vm`: an allowlisted host certificate, or an RBAC token that the
    RBAC service of the console host (the primary) validates, on every request and without
    caching (clj-rbac-client `valid-token->subject`; puppetdb PR #1908; real-world-findings
    §4.1 row 1): on the replica while the primary is down, no token passes."""
    pe = lab.pe
    assert pe is not None
    if _infra_cert(lab, req):
        return None
    token = req.headers.get("x-authentication") or req.query.get("token")
    if token and not lab.vms[pe.primary].serving:
        return _err(
            503,
            "puppetlabs.rbac/service-unavailable",
            f"cannot validate the token: the RBAC service on {pe.primary}:4433 does not answer",
        )
    if pe.token_user(token) is None:
        return _token_invalid()
    return None


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def puppetdb(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    refused = _pdb_auth(lab, vm, req)
    if refused is not None:
        return refused
    path = req.path
    lab.puppetdb.tick(lab)
    store = lab.puppetdb.store(vm.name)
    all_reports, factsets = store.reports, store.facts
    mm = re.fullmatch(r"/metrics/v2/read/puppetlabs\.puppetdb\.ha:name=([a-z-]+)(/Value)?", path)
    if mm:
        # Jolokia's read answer (PuppetDB metrics v2; documentation/ha.markdown "Metrics")
        value = lab.puppetdb.metric(lab, vm, mm.group(1))
        mbean = f"puppetlabs.puppetdb.ha:name={mm.group(1)}"
        if value is None:  # HTTP 200, the error in the body (tests/golden/puppetdb-sync-metric-*)
            error = "javax.management.InstanceNotFoundException"
            return Response.json(
                {
                    "request": {"mbean": mbean, "type": "read"},
                    "error_type": error,
                    "error": f"{error} : {mbean}",
                    "status": 404,
                }
            )
        return Response.json(
            {
                "request": {"mbean": mbean, "type": "read"},
                "value": value if mm.group(2) else {"Value": value},
                "status": 200,
            }
        )
    if path == "/pdb/query/v4/reports" or path.startswith("/pdb/query/v4/reports"):
        reports = list(all_reports)
        q = req.query.get("query")
        if q:
            try:
                reports = [r for r in reports if _pql(json.loads(q), r, all_reports)]
            except (ValueError, TypeError):
                return Response.text("Invalid query", 400)
        order = req.query.get("order_by")
        if order:
            reports.sort(key=lambda r: r["receive_time"], reverse="desc" in order)
        limit = req.query.get("limit")
        if limit:
            reports = reports[: int(limit)]
        return Response.json([_public(r) for r in reports])
    if path == "/pdb/query/v4/facts":
        # one row per fact: certname, name, value, environment
        # (puppetdb documentation/api/query/v4/facts.markdown)
        rows = [
            {"certname": c, "name": n, "value": v, "environment": f.get("environment")}
            for c, f in factsets.items()
            for n, v in f.get("values", {}).items()
        ]
        q = req.query.get("query")
        if q:
            try:
                rows = [r for r in rows if _pql(json.loads(q), r, [])]
            except (ValueError, TypeError):
                return Response.text("Invalid query", 400)
        return Response.json(rows)
    if path == "/pdb/query/v4/producers":
        return Response.json([{"name": n} for n in sorted({r["producer"] for r in all_reports})])
    if path == "/pdb/query/v4/nodes":
        return Response.json(
            [{"certname": n, "deactivated": None, "expired": None} for n in pe.nodes]
        )
    return _err(404, "not-found", path)


_ORDER = {">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}


def _pql(q: Any, r: dict[str, Any], all_reports: list[dict[str, Any]]) -> bool:
    op = q[0]
    if op == "and":
        return all(_pql(x, r, all_reports) for x in q[1:])
    if op == "or":
        return any(_pql(x, r, all_reports) for x in q[1:])
    if op == "not":
        return not _pql(q[1], r, all_reports)
    if op == "=":
        if q[1] == "latest_report?":
            latest = [x for x in all_reports if x["certname"] == r["certname"]]
            return (latest[-1] is r) == bool(q[2])
        return r.get(q[1]) == q[2]
    if op == "~":
        return re.search(q[2], str(r.get(q[1], ""))) is not None
    if op in _ORDER:
        # numbers and timestamps (ISO strings here); a field with no value matches none
        # (https://puppet.com/docs/puppetdb/latest/ast.html, "> (greater than)")
        value = r.get(q[1])
        return value is not None and bool(_ORDER[op](value, q[2]))
    raise ValueError(f"unsupported operator {op}")


def puppetserver(lab: Lab, vm: VM, req: Request) -> Response:
    pe = lab.pe
    assert pe is not None
    path = req.path
    mm = re.fullmatch(r"/puppet/v3/catalog/([^/]+)", path)
    if mm and req.method in ("POST", "GET"):
        certname = mm.group(1)
        env = req.query.get("environment", "production")
        submitted = req.json().get("facts") if req.body else None
        if isinstance(submitted, dict):
            # the server stores the facts the agent sent with its catalog request in PuppetDB
            # (replace facts: puppetdb documentation/api/command/v1/commands.markdown), on every
            # PuppetDB that answers (command_broadcast: labsim/puppetdb.py)
            lab.puppetdb.write_facts(
                lab,
                certname,
                {
                    "values": submitted,
                    "environment": env,
                    "producer": vm.name,
                    "timestamp": now_iso(),
                },
            )
        node = lab.vm_by_host(certname)
        infra = node is not None and node.role in ("primary", "replica")
        params = pe.agent_params(infra)
        version = lab.config_version(vm, env)
        lab.journal(vm.name, "puppetserver.compile", "ok", f"catalog for {certname}: {version}")
        return Response.json(
            {
                "name": certname,
                "version": version,
                "environment": env,
                "producer": vm.name,
                "manage_puppet_conf": params.get("manage_puppet_conf", True),
                "server_list": params.get("server_list", []),
            }
        )
    mm = re.fullmatch(r"/puppet/v3/report/([^/]+)", path)
    if mm and req.method == "PUT":
        report = req.json()
        report["receive_time"] = now_iso()
        report["producer"] = vm.name
        lab.puppetdb.write_report(lab, report)
        lab.journal(
            vm.name,
            "puppetdb.report",
            "ok",
            f"{report['certname']} {report['configuration_version']}",
        )
        return Response.json([])
    return _err(404, "not-found", path)


# ---------------------------------------------------------------------------------------------
# GitLab


def _project_json(lab: Lab, vm: VM, p: dict[str, Any]) -> dict[str, Any]:
    port = "" if lab.gitlab_port == 80 else f":{lab.gitlab_port}"
    return {
        **{k: v for k, v in p.items() if not k.startswith("_")},
        "ssh_url_to_repo": f"git@{vm.name}:{p['path_with_namespace']}.git",
        "http_url_to_repo": f"http://{vm.name}{port}/{p['path_with_namespace']}.git",
        "web_url": f"http://{vm.name}{port}/{p['path_with_namespace']}",
        "default_branch": _default_branch(lab, p),
    }


def _default_branch(lab: Lab, p: dict[str, Any]) -> str | None:
    heads = lab.repo_path(p["path_with_namespace"]) / "refs" / "heads"
    names = sorted(x.name for x in heads.iterdir()) if heads.exists() else []
    packed = lab.repo_path(p["path_with_namespace"]) / "packed-refs"
    if packed.exists():
        names += [
            ln.split("refs/heads/")[-1]
            for ln in packed.read_text().splitlines()
            if "refs/heads/" in ln
        ]
    if not names:
        return None
    return p.get("_default") or names[0]


def _hook_json(h: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in h.items() if k != "token"}


async def gitlab(lab: Lab, vm: VM, req: Request) -> Response:
    gl = lab.gitlab
    if gl is None:
        return Response.text("502 Bad Gateway", 502)
    path, m = req.path, req.method
    if not path.startswith("/api/v4/"):
        if path in ("/", "/users/sign_in", "/-/readiness", "/-/health"):
            return Response(
                200, b"<html>GitLab Community Edition</html>", {"Content-Type": "text/html"}
            )
        return Response.text("Not Found", 404)
    detail = f"{m} {req.raw_path}"
    if lab.fault("api.gitlab", vm.name, detail):
        return Response.json({"message": "503 Service Unavailable"}, 503)
    resp = await _gitlab_api(lab, vm, req)
    lab.journal(
        vm.name,
        "api.gitlab",
        "ok" if resp.status < 400 else ("refused" if resp.status in (401, 403) else "failed"),
        f"{detail} -> {resp.status}",
    )
    return resp


async def _gitlab_api(lab: Lab, vm: VM, req: Request) -> Response:
    gl = lab.gitlab
    assert gl is not None
    path, m = req.path, req.method
    token = (
        req.headers.get("private-token")
        or req.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    if not token or token not in gl.pats:
        return Response.json({"message": "401 Unauthorized"}, 401)
    try:
        body = req.json() if req.body else {}
    except ValueError:
        return Response.json({"message": "400 Bad request"}, 400)
    body.update({k: v for k, v in req.query.items()})
    sub = path[len("/api/v4") :]
    if sub == "/user" and m == "GET":
        return Response.json(gl.root_user())
    if sub == "/user/keys" and m == "GET":
        return Response.json([{k: v for k, v in key.items() if k != "user_id"} for key in gl.keys])
    if sub == "/user/keys" and m == "POST":
        text = str(body.get("key", "")).strip()
        try:
            parsed = asyncssh.import_public_key(text)
        except (asyncssh.KeyImportError, ValueError):
            return Response.json({"message": {"key": ["is invalid"]}}, 400)
        b64 = parsed.export_public_key("openssh").decode().split()[1]
        if any(k["key"].split()[1] == b64 for k in gl.keys):
            return Response.json(
                {"message": {"fingerprint_sha256": ["has already been taken"]}}, 400
            )
        if not body.get("title"):
            return Response.json({"message": {"title": ["can't be blank"]}}, 400)
        key = {
            "id": gl.next_id(),
            "title": body["title"],
            "key": text,
            "created_at": now_iso(),
            "expires_at": body.get("expires_at"),
            "usage_type": body.get("usage_type", "auth_and_signing"),
            "user_id": 1,
        }
        gl.keys.append(key)
        return Response.json({k: v for k, v in key.items() if k != "user_id"}, 201)
    if sub == "/projects" and m == "GET":
        search = req.query.get("search", "")
        return Response.json(
            [
                _project_json(lab, vm, p)
                for p in gl.projects.values()
                if search in p["name"] or search in p["path_with_namespace"]
            ]
        )
    if sub == "/projects" and m == "POST":
        name = body.get("name") or body.get("path")
        if not name:
            return Response.json({"message": {"name": ["can't be blank"]}}, 400)
        ppath = body.get("path") or name
        pwn = f"root/{ppath}"
        if gl.project(pwn):
            return Response.json(
                {
                    "message": {
                        "name": ["has already been taken"],
                        "path": ["has already been taken"],
                    }
                },
                400,
            )
        pid = gl.next_id()
        p = {
            "id": pid,
            "name": name,
            "path": ppath,
            "path_with_namespace": pwn,
            "visibility": body.get("visibility", "private"),
            "created_at": now_iso(),
            "namespace": {"id": 1, "name": "root", "path": "root", "kind": "user"},
        }
        gl.projects[pid] = p
        bare = lab.repo_path(pwn)
        bare.parent.mkdir(parents=True, exist_ok=True)
        await lab.git("init", "--bare", "-q", str(bare))
        return Response.json(_project_json(lab, vm, p), 201)
    mm = re.fullmatch(
        r"/projects/([^/]+)(/hooks(?:/(\d+))?)?", _project_route(req.raw_path[len("/api/v4") :])
    )
    if mm:
        proj = gl.project(urllib.parse.unquote(mm.group(1)))
        if proj is None:
            return Response.json({"message": "404 Project Not Found"}, 404)
        if not mm.group(2):
            if m == "GET":
                return Response.json(_project_json(lab, vm, proj))
            return Response.json({"message": "405 Method Not Allowed"}, 405)
        hid = mm.group(3)
        hooks = [h for h in gl.hooks.values() if h["project_id"] == proj["id"]]
        if hid is None and m == "GET":
            return Response.json([_hook_json(h) for h in hooks])
        if hid is None and m == "POST":
            if not body.get("url"):
                return Response.json({"error": "url is missing"}, 400)
            h_id = gl.next_id()
            h = {
                "id": h_id,
                "url": body["url"],
                "project_id": proj["id"],
                "push_events": _bool(body.get("push_events", True)),
                "push_events_branch_filter": body.get("push_events_branch_filter", ""),
                "enable_ssl_verification": _bool(body.get("enable_ssl_verification", True)),
                "created_at": now_iso(),
                "alert_status": "executable",
            }
            if body.get("token"):
                gl.hook_tokens[h_id] = str(body["token"])
            gl.hooks[h_id] = h
            return Response.json(_hook_json(h), 201)
        if hid is not None:
            hk = gl.hooks.get(int(hid))
            if hk is None or hk["project_id"] != proj["id"]:
                return Response.json({"message": "404 Not found"}, 404)
            if m == "GET":
                return Response.json(_hook_json(hk))
            if m == "PUT":
                for k in ("url", "push_events_branch_filter"):
                    if k in body:
                        hk[k] = body[k]
                for k in ("push_events", "enable_ssl_verification"):
                    if k in body:
                        hk[k] = _bool(body[k])
                if body.get("token"):
                    gl.hook_tokens[hk["id"]] = str(body["token"])
                return Response.json(_hook_json(hk))
            if m == "DELETE":
                gl.hooks.pop(hk["id"])
                gl.hook_tokens.pop(hk["id"], None)
                return Response(204)
    if sub == "/application/settings":
        if m == "PUT":
            for k, v in body.items():
                if k == "allow_local_requests_from_hooks_and_services":
                    k = "allow_local_requests_from_web_hooks_and_services"
                gl.settings[k] = (
                    _bool(v)
                    if isinstance(v, (bool, str)) and str(v).lower() in ("true", "false")
                    else v
                )
        return Response.json(gl.settings)
    return Response.json({"error": "404 Not Found"}, 404)


def _project_route(raw: str) -> str:
    """'/projects/root%2Fcontrol-repo/hooks' -> '/projects/root/control-repo/hooks' safe form."""
    mm = re.fullmatch(r"/projects/([^/]+)(.*)", raw)
    if not mm:
        return raw
    ident = urllib.parse.unquote(mm.group(1))
    return "/projects/" + ident.replace("/", "%2F") + mm.group(2)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).lower() in ("true", "1", "yes")


async def fire_push_hooks(
    lab: Lab, project_path: str, before: dict[str, str], changed: dict[str, str]
) -> None:
    gl = lab.gitlab
    if gl is None:
        return
    gvm = lab.role_vm("gitlab")
    p = gl.project(project_path)
    if p is None:
        return
    for ref, sha in changed.items():
        _rc, log, _ = await lab.git(
            "--git-dir",
            str(lab.repo_path(project_path)),
            "log",
            "-1",
            "--format=%H%x00%s%x00%an%x00%ae",
            sha,
        )
        parts = log.decode().strip().split("\x00")
        payload = {
            "object_kind": "push",
            "event_name": "push",
            "before": before.get(ref, "0" * 40),
            "after": sha,
            "ref": ref,
            "checkout_sha": sha,
            "user_id": 1,
            "user_name": "Administrator",
            "user_username": "root",
            "project_id": p["id"],
            "project": {
                "id": p["id"],
                "name": p["name"],
                "path_with_namespace": p["path_with_namespace"],
                "git_ssh_url": f"git@{gvm.name}:{p['path_with_namespace']}.git",
                "default_branch": _default_branch(lab, p),
            },
            "commits": [
                {
                    "id": parts[0],
                    "message": parts[1] if len(parts) > 1 else "",
                    "author": {
                        "name": parts[2] if len(parts) > 2 else "",
                        "email": parts[3] if len(parts) > 3 else "",
                    },
                }
            ],
            "total_commits_count": 1,
            "repository": {
                "name": p["name"],
                "git_ssh_url": f"git@{gvm.name}:{p['path_with_namespace']}.git",
            },
        }
        for h in [h for h in gl.hooks.values() if h["project_id"] == p["id"] and h["push_events"]]:
            await _deliver(lab, gvm.name, h, payload)


async def _deliver(lab: Lab, gname: str, hook: dict[str, Any], payload: dict[str, Any]) -> None:
    gl = lab.gitlab
    assert gl is not None
    url = hook["url"]
    parsed = urllib.parse.urlsplit(url)
    safe = f"POST {parsed.scheme}://{parsed.netloc}{parsed.path}"
    if not gl.settings.get("allow_local_requests_from_web_hooks_and_services"):
        lab.journal(
            gname,
            "gitlab.webhook",
            "refused",
            f"{safe}: blocked: local network requests not allowed",
        )
        hook["alert_status"] = "executable"
        return
    if lab.fault("gitlab.webhook", gname, safe):
        return
    target = lab.vm_by_host(parsed.hostname or "")
    if target is None:
        lab.journal(gname, "gitlab.webhook", "failed", f"{safe}: cannot resolve host")
        return
    ctx: ssl.SSLContext | None = None
    if parsed.scheme == "https":
        if hook["enable_ssl_verification"]:
            ctx = ssl.create_default_context()
            ctx.load_default_certs()
            for pem in gl.trusted_cas:
                with contextlib.suppress(ssl.SSLError):
                    ctx.load_verify_locations(cadata=pem)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "User-Agent": "GitLab/17.5.0",
    }
    if hook["id"] in gl.hook_tokens:
        headers["X-Gitlab-Token"] = gl.hook_tokens[hook["id"]]
    try:
        status, _ = await http.request(
            target.address,
            port,
            "POST",
            path,
            server_name=parsed.hostname,
            ssl_ctx=ctx,
            headers=headers,
            body=json.dumps(payload).encode(),
        )
    except ssl.SSLError as exc:
        lab.journal(gname, "gitlab.webhook", "failed", f"{safe}: SSL error: {exc.reason or exc}")
        return
    except OSError as exc:
        lab.journal(gname, "gitlab.webhook", "failed", f"{safe}: {exc.strerror or exc}")
        return
    lab.journal(gname, "gitlab.webhook", "ok" if status < 400 else "failed", f"{safe} -> {status}")
