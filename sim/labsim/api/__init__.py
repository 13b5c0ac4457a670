"""HTTP APIs: PE (status, RBAC, classifier, Code Manager, orchestrator, PuppetDB, Puppet Server)
and GitLab. Each service is a module with a route table (labsim.api.router); this one finds the
service a request is for, by its path and port, and answers faults and the journal for all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsim import commands, http
from labsim.api import (
    classifier,
    code_manager,
    gitlab,
    orchestrator,
    puppetdb,
    puppetserver,
    rbac,
    status,
)
from labsim.api.gitlab import fire_push_hooks
from labsim.api.orchestrator import run_job
from labsim.api.router import Call, Router, err, outcome, route
from labsim.http import Request, Response

if TYPE_CHECKING:
    from labsim.lab import VM, Lab

__all__ = ["commands", "fire_push_hooks", "handler_for", "pe_handle", "run_job"]


def handler_for(lab: Lab, vm: VM, port: int) -> http.Handler:
    async def handle(req: Request) -> Response:
        if vm.role == "gitlab":
            return await gitlab.gitlab(lab, vm, req)
        return await pe_handle(lab, vm, port, req)

    return handle


def _pcp(call: Call) -> Response:
    # wss://host:8142/pcp and /pcp2 (reference §3.1): agents' pxp-agent connections are
    # WebSockets; a plain request is refused
    return err(400, "puppetlabs.pcp/websocket-required", "expected a WebSocket upgrade")


PCP_BROKER = Router([route("*", ".*", _pcp)], lambda req: err(404, "not-found", req.path))

# path prefix, port (0: every port), the operation a fault names and the journal records
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
SERVICES: dict[str, Router] = {
    "api.pcp-broker": PCP_BROKER,
    "api.status": status.ROUTER,
    "api.rbac": rbac.ROUTER,
    "api.classifier": classifier.ROUTER,
    "api.code-manager": code_manager.ROUTER,
    "api.orchestrator": orchestrator.ROUTER,
    "api.puppetdb": puppetdb.ROUTER,
    "api.puppetserver": puppetserver.ROUTER,
}


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
        return err(404, "not-found", f"not found: {path}")
    detail = f"{req.method} {req.raw_path}"
    lab.replication.record(lab)
    if lab.fault(op, vm.name, detail):
        return err(
            503,
            "puppetlabs.labsim/service-unavailable",
            f"{op} is temporarily unavailable (injected fault)",
        )
    try:
        resp = await SERVICES[op](lab, vm, req, port)
    except (ValueError, KeyError, TypeError) as exc:
        resp = err(400, "malformed-request", f"malformed request: {exc}")
    lab.replication.record(lab)  # a write is stamped with its own time
    if op not in ("api.puppetserver",):
        lab.journal(vm.name, op, outcome(resp.status), f"{detail} -> {resp.status}")
    return resp
