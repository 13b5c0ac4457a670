"""`puppet infrastructure status`: every PE service on the primary and replica, its state and
alerts (the status API's answers: labsim/api/status.py)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from labsim.commands.base import Ctx, Result, _opt

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


DB_REPLICATED = {"classifier": "Classifier", "rbac": "RBAC", "activity": "Activity"}


def status_entries(lab: Lab) -> list[dict[str, Any]]:
    """`puppet infrastructure status --format=json` as PE prints it (shape, service names and the
    replication alerts: peadm spec/fixtures/infrastatus.json). Broken database replication keeps
    every service `running` and shows as error alerts on the primary's services
    (`replica:db-replication-inactive`); `replica:unhealthy` is an error alert on a replica service,
    its state `running` too."""
    pe = lab.pe
    if pe is None:
        return []
    prim = lab.vms[pe.primary]
    inactive = pe.replica is not None and lab.faults.has("db-replication-inactive")
    entries: list[dict[str, Any]] = []
    specs = [
        ("code-manager-service", "Code Manager", "code-manager", 8170, "/"),
        ("file-sync-storage-service", "File Sync Storage Service", "file-sync-storage", 8140, "/"),
        ("file-sync-client-service", "File Sync Client Service", "file-sync-client", 8140, "/"),
        ("pe-master", "Puppet Server", "master", 8140, "/"),
        ("classifier-service", "Classifier", "classifier", 4433, "/classifier-api"),
        ("rbac-service", "RBAC", "rbac", 4433, "/rbac-api"),
        ("activity-service", "Activity Service", "activity", 4433, "/activity-api"),
        ("orchestrator-service", "Orchestrator", "orchestrator", 8143, "/orchestrator"),
        ("broker-service", "PCP Broker", "pcp-broker", 8143, "/pcp"),
        ("broker-service", "PCP Broker v2", "pcp-broker", 8143, "/pcp2"),
        ("puppetdb-status", "PuppetDB", "puppetdb", 8081, "/pdb"),
    ]
    for svc, disp, typ, port, path in specs:
        up = port in prim.http
        status: dict[str, Any] | None = {"state": "running"} if up else None
        alerts: list[dict[str, str]] = []
        label = DB_REPLICATED.get(typ) or ("Orchestrator" if typ == "orchestrator" else None)
        if up and pe.replica and pe.replica_enabled and label and status is not None:
            # replication:classifier|rbac=broken: that database's replication alone
            broken = inactive or lab.faults.has_store(typ, "broken")
            replication = "inactive" if broken else "running"
            status["replication"] = {"mode": "source", "status": replication}
            if broken:
                alerts.append(
                    {
                        "severity": "error",
                        "message": f"Database replication for {label} is inactive",
                    }
                )
        entries.append(_entry(lab, prim, svc, disp, typ, port, path, up, status, alerts))
    if pe.replica:
        rvm = lab.vms[pe.replica]
        unhealthy = lab.faults.has("replica-unhealthy")
        # a replica's entries use short service names (the peadm fixture)
        for svc, disp, port, path in [
            ("file-sync-client", "File Sync Client Service", 8140, "/"),
            ("master", "Puppet Server", 8140, "/"),
            ("classifier", "Classifier", 4433, "/classifier-api"),
            ("rbac", "RBAC", 4433, "/rbac-api"),
            ("activity", "Activity Service", 4433, "/activity-api"),
            ("puppetdb", "PuppetDB", 8081, "/pdb"),
        ]:
            up = rvm.serving and rvm.installed and (not pe.replica_enabled or port in rvm.http)
            status = {"state": "running"} if up else None
            alerts = []
            if up and svc in DB_REPLICATED and status is not None:
                broken = inactive or lab.faults.has_store(svc, "broken")
                replication = "inactive" if broken else "running"
                status["replication"] = {"mode": "replica", "status": replication}
            if up and unhealthy and svc == "puppetdb":
                # the alert's shape is PE's; its text is labsim's own
                alerts = [
                    {
                        "severity": "error",
                        "message": f"PuppetDB on {rvm.name} cannot sync with {prim.name} "
                        "(labsim fault replica:unhealthy)",
                    }
                ]
            entries.append(_entry(lab, rvm, svc, disp, svc, port, path, up, status, alerts))
    return entries


def _entry(
    lab: Lab,
    vm: VM,
    service: str,
    display: str,
    typ: str,
    port: int,
    path: str,
    up: bool,
    status: dict[str, Any] | None,
    alerts: list[dict[str, str]],
) -> dict[str, Any]:
    """One service's entry; a booted server's PuppetDB reports `starting` for a while."""
    state = "running" if up else "unreachable"
    if up and typ == "puppetdb" and lab.puppetdb_starting(vm):
        state = "starting"
        status = {"state": state}
    return {
        "service": service,
        "display_name": display,
        "state": state,
        "status": status,
        "server": vm.name,
        "url": f"https://{vm.name}:{port}{path}",
        "type": typ,
        "alerts": alerts,
    }


async def infra_status(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.status"
    pe = lab.pe
    if pe is None or ctx.vm.name not in (pe.primary, pe.replica):
        return Result(1, "", "Error: puppet infrastructure status must run on a PE server\n", op)
    failed = ctx.injected(
        op, "Error: Unable to contact services for status information (injected)\n"
    )
    if failed is not None:
        return failed
    await lab.sleep(lab.dur("status"), op)
    entries = status_entries(lab)
    host = _opt(args, "--host")
    if host:
        entries = [e for e in entries if e["server"] == host]
    if any(a == "--format=json" for a in args) or _opt(args, "--format") == "json":
        return Result(0, json.dumps(entries, indent=2) + "\n", "", op)
    lines = ["Notice: Contacting services for status information..."]
    for e in entries:
        role = "Primary" if e["server"] == pe.primary else "Replica"
        st = {"running": "Running", "error": "Error", "unreachable": "Unreachable"}[e["state"]]
        lines.append(f"{e['display_name']}: {st} on {role}, {e['url']}")
        for a in e["alerts"]:
            lines.append(f"    {a['severity'].capitalize()}: {a['message']}")
    ok = sum(e["state"] == "running" for e in entries)
    lines.append(time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime()))
    lines.append(f"{ok} of {len(entries)} services are fully operational.")
    return Result(0 if ok == len(entries) else 1, "\n".join(lines) + "\n", "", op)
