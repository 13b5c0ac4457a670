"""PE's Code Manager (`/code-manager/`, port 8170): the push webhook, deploys and their status."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from labsim.api.common import auth
from labsim.api.router import Call, Router, err, no_route, route, token_invalid
from labsim.http import Response
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import Lab


def _guard(call: Call) -> Response | None:
    call.caller = auth(call.lab, call.req)
    return token_invalid() if call.caller is None else None


def webhook(call: Call) -> Response:
    lab, req = call.lab, call.req
    pe = call.pe
    typ = req.query.get("type", "")
    if typ != "gitlab":
        return err(
            400,
            "puppetlabs.code-manager/unrecognized-webhook-type",
            f"Unrecognized webhook type: '{typ}'",
        )
    user = pe.token_user(req.query.get("token"))
    if user is None or not pe.can_deploy(user):
        return token_invalid()
    body = req.json()
    ref = body.get("ref", "")
    env = ref.rsplit("/", 1)[-1]
    if env:
        lab.spawn(lab.deploy(call.vm, env, user["login"]))
    return Response.json({"status": "OK", "environments": [env]})


async def deploys(call: Call) -> Response:
    lab, vm, user = call.lab, call.vm, call.caller
    assert user is not None
    pe = call.pe
    if not pe.can_deploy(user):
        return err(
            403,
            "puppetlabs.rbac/permission-denied",
            "You are not authorized to deploy this environment",
        )
    body = call.req.json()
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


def deploys_status(call: Call) -> Response:
    pe = call.pe
    req = call.req
    if "id" in req.query:
        d = pe.deploys.get(int(req.query["id"]))
        if d is None:
            return err(404, "not-found", "no such deploy")
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


def _branches(lab: Lab) -> set[str]:
    pe = lab.pe
    assert pe is not None
    remote = pe.master_params().get("r10k_remote", "")
    path = remote.split(":", 1)[-1].removesuffix(".git")
    heads = lab.repo_path(path) / "refs" / "heads" if path else None
    if heads and heads.exists():
        return {p.name for p in heads.iterdir()}
    return set()


ROUTER = Router(
    [
        route("POST", "/code-manager/v1/webhook", webhook, public=True),
        route("POST", "/code-manager/v1/deploys", deploys),
        route("GET", "/code-manager/v1/deploys/status", deploys_status),
    ],
    no_route,
    _guard,
)
