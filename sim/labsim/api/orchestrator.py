"""PE's orchestrator (`/orchestrator/`, port 8143): deploy jobs (a Puppet run on each node) and
the inventory of connected agents. On an enabled replica it is inactive until promotion."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from labsim import commands
from labsim.api.common import auth, orchestrator_inactive
from labsim.api.router import Call, Router, err, no_route, route, token_invalid
from labsim.http import Response
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import Lab


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


def _base(call: Call) -> str:
    return f"https://{call.vm.name}:8143/orchestrator/v1"


def _guard(call: Call) -> Response | None:
    if orchestrator_inactive(call.lab, call.vm):
        return err(
            503,
            "puppetlabs.orchestrator/service-unavailable",
            f"The orchestrator on {call.vm.name} is not active: it serves only after the replica "
            "is promoted.",
        )
    call.caller = auth(call.lab, call.req)
    return token_invalid() if call.caller is None else None


async def deploy(call: Call) -> Response:
    lab, pe = call.lab, call.pe
    body = call.req.json()
    scope = body.get("scope") or {}
    env = body.get("environment")
    if env is None:
        return err(400, "puppetlabs.orchestrator/validation-error", "environment is required")
    if env == "" and body.get("enforce_environment", True):
        return err(
            400,
            "puppetlabs.orchestrator/empty-environment",
            "environment must be given when enforce_environment is true",
        )
    if "nodes" in scope:
        nodes = list(scope["nodes"])
    elif "query" in scope or "node_group" in scope:
        nodes = list(pe.nodes)
    else:
        return err(400, "puppetlabs.orchestrator/empty-target", "no target")
    if not nodes:
        return err(400, "puppetlabs.orchestrator/empty-target", "the target is empty")
    jid = next_job_id(lab)  # answered now, whenever the job's task first runs
    lab.spawn(run_job(lab, nodes, bool(body.get("noop")), call.caller, jid))
    await asyncio.sleep(0)
    return Response.json({"job": {"id": f"{_base(call)}/jobs/{jid}", "name": str(jid)}}, 202)


def job(call: Call) -> Response:
    found = call.pe.jobs.get(int(call.group(1)))
    if found is None:
        return err(404, "puppetlabs.orchestrator/unknown-job", "no such job")
    base = _base(call)
    if call.group(2):
        items = found["nodes"]
        if "state" in call.req.query:
            items = [n for n in items if n["state"] == call.req.query["state"]]
        return Response.json({"items": items, "next-events": {"id": "1", "event": "1"}})
    out = {k: v for k, v in found.items() if k != "nodes"}
    out["id"] = f"{base}/jobs/{found['id']}"
    out["nodes"] = {"id": f"{base}/jobs/{found['id']}/nodes"}
    return Response.json(out)


def inventory(call: Call) -> Response:
    lab, pe = call.lab, call.pe
    names = call.req.json().get("nodes", pe.nodes) if call.req.method == "POST" else pe.nodes
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


ROUTER = Router(
    [
        route("POST", "/orchestrator/v1/command/deploy", deploy),
        route("GET", r"/orchestrator/v1/jobs/(\d+)(/nodes)?", job),
        route("GET POST", "/orchestrator/v1/inventory", inventory),
    ],
    no_route,
    _guard,
)
