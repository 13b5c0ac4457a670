"""PE's RBAC service (`/rbac-api/`, port 4433): tokens, users, roles."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labsim.api.common import auth, read_only
from labsim.api.router import Call, Router, err, no_route, route, token_invalid
from labsim.http import Response
from labsim.state import ROLES

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


Edit = Callable[[Call], Response]


def _write(handler: Edit) -> Edit:
    """A write RBAC refuses here, if it does: a replica's RBAC is read-only; only an
    administrator creates users and roles."""

    def checked(call: Call) -> Response:
        if read_only(call.lab, call.vm):
            return err(403, "puppetlabs.rbac/read-only", "RBAC is read-only on a replica")
        if not call.pe.is_admin(call.caller):
            return err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
        return handler(call)

    return checked


def _command(handler: Edit) -> Edit:
    """A command (`/command/...`, a password reset) only an administrator on the primary runs."""

    def checked(call: Call) -> Response:
        if read_only(call.lab, call.vm) or not call.pe.is_admin(call.caller):
            return err(403, "puppetlabs.rbac/permission-denied", "Permission denied")
        return handler(call)

    return checked


def _data(lab: Lab, vm: VM) -> dict[str, Any]:
    """What RBAC serves on `vm`: the primary's own, or the replica's replicated copy."""
    pe = lab.pe
    assert pe is not None
    if read_only(lab, vm) and pe.replica_enabled and not pe.promoted:
        return lab.replication.view(lab, "rbac")
    return {"users": pe.users, "role_members": pe.role_members, "roles": pe.custom_roles}


def _public_user(u: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in u.items() if k != "password"}


def _guard(call: Call) -> Response | None:
    call.caller = auth(call.lab, call.req, call.vm)
    return token_invalid() if call.caller is None else None


def login(call: Call) -> Response:
    pe = call.pe
    body = call.req.json()
    user = pe.user_by_login(body.get("login", ""))
    if user is None or user.get("password") != body.get("password") or user["is_revoked"]:
        return err(
            401,
            "puppetlabs.rbac/authentication-failed",
            "The provided login or password is invalid.",
        )
    return Response.json({"token": pe.issue_token(user, body.get("label", ""))})


def authenticate(call: Call) -> Response:
    # 400 for a malformed token, 403 for a revoked, expired or unknown one; no caller
    # authentication (help.puppet.com/pe/2023.8/topics/rbac_api_v2_auth_token_auth_post.htm)
    pe = call.pe
    token = call.req.json().get("token")
    if not isinstance(token, str) or not re.fullmatch(r"[0-9A-Za-z_-]{20,}", token.strip()):
        return err(400, "puppetlabs.rbac/malformed-token", "The token is malformed.")
    user = pe.token_user(token)
    if user is None:
        return err(
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


def reset_password(call: Call) -> Response:
    pe = call.pe
    body = call.req.json()
    uid = pe.reset_tokens.pop(body.get("token", ""), None)
    if uid is None:
        return err(403, "puppetlabs.rbac/invalid-token", "The reset token is invalid or used.")
    pe.users[uid]["password"] = body.get("password", "")
    return Response.json(_public_user(pe.users[uid]))


def list_users(call: Call) -> Response:
    data = _data(call.lab, call.vm)
    members: dict[Any, list[str]] = data["role_members"]
    users = [_public_user(u) for u in data["users"].values()]
    for u in users:
        u["role_ids"] = sorted(int(r) for r, ids in members.items() if u["id"] in ids)
    if call.req.path.startswith("/rbac-api/v2"):
        f = call.req.query.get("filter", "").strip('"')
        return Response.json({"users": [u for u in users if f in u["login"]]})
    return Response.json(users)


def get_user(call: Call) -> Response:
    found = call.pe.users.get(call.group(1))
    return Response.json(_public_user(found)) if found else err(404, "not-found", "no such user")


@_write
def create_user(call: Call) -> Response:
    pe = call.pe
    body = call.req.json()
    login = body.get("login", "")
    if not login:
        return err(400, "malformed-request", "login is required")
    if pe.user_by_login(login) or (
        body.get("email") and any(u["email"] == body.get("email") for u in pe.users.values())
    ):
        return err(409, "conflict", f"A user with login '{login}' already exists.")
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


def list_roles(call: Call) -> Response:
    data = _data(call.lab, call.vm)
    roles = []
    for r in ROLES:
        roles.append(
            {
                **r,
                "permissions": [],
                "user_ids": list(
                    data["role_members"].get(r["id"], data["role_members"].get(str(r["id"]))) or []
                ),
                "group_ids": [],
            }
        )
    roles += list(data["roles"].values())
    return Response.json(roles)


@_write
def create_role(call: Call) -> Response:
    # POST /roles: 201 Created, Location the new role (DA-2018.1 rbac_api_v1_user_role.md)
    pe = call.pe
    body = call.req.json()
    name = body.get("display_name", "")
    taken = {r["display_name"] for r in ROLES} | {
        r["display_name"] for r in pe.custom_roles.values()
    }
    if not name or name in taken:
        return err(409, "conflict", f"A role named {name!r} already exists.")
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


def get_role(call: Call) -> Response:
    found = _data(call.lab, call.vm)["roles"].get(call.group(1))
    return Response.json(found) if found else err(404, "not-found", "no such role")


@_write
def replace_role(call: Call) -> Response:
    # PUT /roles/<rid>: replaces the role with the body, 200 with the role (DA-2018.1
    # rbac_api_v1_user_role.md, "PUT /roles/<rid>"); the id in the body must match
    role = call.pe.custom_roles.get(call.group(1))
    if role is None:
        return err(404, "not-found", "no such role")
    body = call.req.json()
    if str(body.get("id")) != call.group(1):
        return err(400, "malformed-request", "the role's id does not match the URL")
    for key in ("display_name", "description", "permissions", "user_ids", "group_ids"):
        if key in body:
            role[key] = body[key]
    return Response.json(role)


@_write
def delete_role(call: Call) -> Response:
    if call.pe.custom_roles.pop(call.group(1), None) is None:
        return err(404, "not-found", "no such role")
    return Response(200)  # DELETE /roles/<rid>: 200 OK (same source)


@_command
def add_users_to_role(call: Call) -> Response:
    pe = call.pe
    body = call.req.json()
    rid = int(body["role_id"])
    if rid not in pe.role_members:
        return err(404, "not-found", "no such role")
    for uid in body.get("user_ids", []):
        if uid not in pe.users:
            return err(404, "not-found", f"no such user {uid}")
        if uid not in pe.role_members[rid]:
            pe.role_members[rid].append(uid)
    return Response(204)


@_command
def add_roles_to_user(call: Call) -> Response:
    pe = call.pe
    body = call.req.json()
    for rid in body.get("role_ids", []):
        pe.role_members.setdefault(int(rid), []).append(body["user_id"])
    return Response(204)


@_command
def password_reset_token(call: Call) -> Response:
    pe = call.pe
    if call.group(1) not in pe.users:
        return err(404, "not-found", "no such user")
    tok = secrets.token_urlsafe(24)
    pe.reset_tokens[tok] = call.group(1)
    return Response(201, tok.encode(), {"Content-Type": "text/plain"})


def issue_token(call: Call) -> Response:
    assert call.caller is not None  # the guard's
    description = call.req.json().get("description", "")
    return Response.json({"token": call.pe.issue_token(call.caller, description)})


V1 = "/rbac-api/v1"
ROUTER = Router(
    [
        route("POST", f"{V1}/auth/token", login, public=True),
        route("POST", "/rbac-api/v2/auth/token/authenticate", authenticate, public=True),
        route("POST", f"{V1}/auth/reset", reset_password, public=True),
        route("GET", "/rbac-api/v[12]/users", list_users),
        route("GET", f"{V1}/users/([^/]+)", get_user),
        route("POST", f"{V1}/users", create_user),
        route("GET", f"{V1}/roles", list_roles),
        route("POST", f"{V1}/roles", create_role),
        route("GET", rf"{V1}/roles/(\d+)", get_role),
        route("PUT", rf"{V1}/roles/(\d+)", replace_role),
        route("DELETE", rf"{V1}/roles/(\d+)", delete_role),
        route("POST", f"{V1}/command/roles/add-users", add_users_to_role),
        route("POST", f"{V1}/command/users/add-roles", add_roles_to_user),
        route("POST", f"{V1}/users/([^/]+)/password/reset", password_reset_token),
        route("POST", f"{V1}/tokens", issue_token),
    ],
    no_route,
    _guard,
)
