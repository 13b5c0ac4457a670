"""GitLab's REST API (`/api/v4/`) as the drill uses it: the user and its SSH keys, projects, their
push webhooks (delivered by `fire_push_hooks`), the application settings."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any

import asyncssh

from labsim import http
from labsim.api.router import Call, Router, outcome, route
from labsim.http import Request, Response
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


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
    resp = await ROUTER(lab, vm, req)
    lab.journal(
        vm.name,
        "api.gitlab",
        outcome(resp.status),
        f"{detail} -> {resp.status}",
    )
    return resp


def _guard(call: Call) -> Response | None:
    """A personal access token, then a JSON body (the query's fields join it)."""
    req = call.req
    token = (
        req.headers.get("private-token")
        or req.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    if not token or token not in call.gitlab.pats:
        return Response.json({"message": "401 Unauthorized"}, 401)
    try:
        call.body = req.json() if req.body else {}
    except ValueError:
        return Response.json({"message": "400 Bad request"}, 400)
    call.body.update({k: v for k, v in req.query.items()})
    return None


def user(call: Call) -> Response:
    return Response.json(call.gitlab.root_user())


def list_keys(call: Call) -> Response:
    return Response.json(
        [{k: v for k, v in key.items() if k != "user_id"} for key in call.gitlab.keys]
    )


def add_key(call: Call) -> Response:
    gl, body = call.gitlab, call.body
    text = str(body.get("key", "")).strip()
    try:
        parsed = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError):
        return Response.json({"message": {"key": ["is invalid"]}}, 400)
    b64 = parsed.export_public_key("openssh").decode().split()[1]
    if any(k["key"].split()[1] == b64 for k in gl.keys):
        return Response.json({"message": {"fingerprint_sha256": ["has already been taken"]}}, 400)
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


def list_projects(call: Call) -> Response:
    search = call.req.query.get("search", "")
    return Response.json(
        [
            _project_json(call.lab, call.vm, p)
            for p in call.gitlab.projects.values()
            if search in p["name"] or search in p["path_with_namespace"]
        ]
    )


async def create_project(call: Call) -> Response:
    lab, gl, body = call.lab, call.gitlab, call.body
    name = body.get("name") or body.get("path")
    if not name:
        return Response.json({"message": {"name": ["can't be blank"]}}, 400)
    ppath = body.get("path") or name
    pwn = f"root/{ppath}"
    if gl.project(pwn):
        return Response.json(
            {"message": {"name": ["has already been taken"], "path": ["has already been taken"]}},
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
    return Response.json(_project_json(lab, call.vm, p), 201)


def _project(call: Call) -> dict[str, Any] | None:
    return call.gitlab.project(urllib.parse.unquote(call.group(1)))


def project(call: Call) -> Response:
    proj = _project(call)
    if proj is None:
        return Response.json({"message": "404 Project Not Found"}, 404)
    if call.req.method == "GET":
        return Response.json(_project_json(call.lab, call.vm, proj))
    return Response.json({"message": "405 Method Not Allowed"}, 405)


def hooks(call: Call) -> Response:
    """GET lists a project's hooks, POST adds one."""
    gl, body = call.gitlab, call.body
    proj = _project(call)
    if proj is None:
        return Response.json({"message": "404 Project Not Found"}, 404)
    if call.req.method == "GET":
        return Response.json(
            [_hook_json(h) for h in gl.hooks.values() if h["project_id"] == proj["id"]]
        )
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


def hook(call: Call) -> Response:
    """GET, PUT (an edit) or DELETE one hook of a project."""
    gl, body, m = call.gitlab, call.body, call.req.method
    proj = _project(call)
    if proj is None:
        return Response.json({"message": "404 Project Not Found"}, 404)
    hk = gl.hooks.get(int(call.group(2)))
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
    gl.hooks.pop(hk["id"])
    gl.hook_tokens.pop(hk["id"], None)
    return Response(204)


def settings(call: Call) -> Response:
    gl = call.gitlab
    if call.req.method == "PUT":
        for k, v in call.body.items():
            if k == "allow_local_requests_from_hooks_and_services":
                k = "allow_local_requests_from_web_hooks_and_services"
            gl.settings[k] = (
                _bool(v)
                if isinstance(v, (bool, str)) and str(v).lower() in ("true", "false")
                else v
            )
    return Response.json(gl.settings)


def _route_path(req: Request) -> str:
    return _project_route(req.raw_path.removeprefix("/api/v4"))


def _not_found(req: Request) -> Response:
    return Response.json({"error": "404 Not Found"}, 404)


PROJECT = "/projects/([^/]+)"
ROUTER = Router(
    [
        route("GET", "/user", user),
        route("GET", "/user/keys", list_keys),
        route("POST", "/user/keys", add_key),
        route("GET", "/projects", list_projects),
        route("POST", "/projects", create_project),
        route("*", PROJECT, project),
        route("GET POST", f"{PROJECT}/hooks", hooks),
        route("GET PUT DELETE", rf"{PROJECT}/hooks/(\d+)", hook),
        route("*", "/application/settings", settings),
    ],
    _not_found,
    _guard,
    _route_path,
)


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
