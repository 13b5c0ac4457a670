"""The status API of every PE service (PDF-2021.7.1 p.436-441): `/status/v1/simple` and
`/status/v1/services`, on each service's port."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labsim.api.common import infra_cert, orchestrator_inactive
from labsim.api.router import Call, Router, err, not_found, route
from labsim.http import Response

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


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


# the services each port's status API reports
_SERVICES = {
    4433: ["rbac-service", "classifier-service", "activity-service"],
    8143: ["orchestrator-service", "broker-service"],
    8081: ["puppetdb-status"],
    8170: ["code-manager-service"],
    443: ["rbac-service", "classifier-service", "activity-service"],
}


def _names(call: Call) -> list[str]:
    lab, vm = call.lab, call.vm
    if call.port == 8140:
        primary = lab.pe is not None and vm.name == lab.pe.primary
        extra = ["code-manager-service", "file-sync-storage-service"] if primary else []
        return ["server", "file-sync-client-service", *extra]
    return _SERVICES.get(call.port, [])


def _state(lab: Lab, vm: VM, name: str) -> str:
    if name == "orchestrator-service" and orchestrator_inactive(lab, vm):
        return "unknown"
    if name == "puppetdb-status":
        if lab.puppetdb_starting(vm):
            return "starting"
        return lab.puppetdb.status(lab, vm)[0]
    return "running"


def _guard(call: Call) -> Response | None:
    if call.port in (4433, 8081) and not infra_cert(call.lab, call.req):
        # the status of console-services and PuppetDB answers PE's own servers' certificates;
        # whether it answers anyone else is not documented: labsim refuses (the stricter answer)
        return err(403, "puppetlabs.trapperkeeper/forbidden", "Forbidden: no allowed certificate")
    return None


def simple(call: Call) -> Response:
    """200 only when every service is `running`, 503 otherwise; alerts do not change a state."""
    names = _names(call)
    rest = call.group(1).strip("/")
    if rest and rest not in names and rest != "server":
        return Response.text(f"not found: {rest}", 404)
    states = [_state(call.lab, call.vm, n) for n in ([rest] if rest else names)]
    worst = next((s for s in states if s != "running"), "running")
    return Response.text(worst, 200 if worst == "running" else 503)


def services(call: Call) -> Response:
    lab, vm = call.lab, call.vm
    rest = call.group(1).strip("/")
    out = {}
    for n in _names(call):
        out[n] = {
            "service_version": "2025.8.0",
            "service_status_version": 1,
            "detail_level": call.req.query.get("level", "info"),
            "state": _state(lab, vm, n),
            "status": _service_status(lab, vm, n),
            "active_alerts": _alerts(lab, vm, n) + _pdb_alerts(lab, vm, n),
        }
    code = 200 if all(e["state"] == "running" for e in out.values()) else 503
    if rest:
        if rest not in out:
            return err(404, "service-not-found", f"No status information for '{rest}'")
        return Response.json(out[rest], 200 if out[rest]["state"] == "running" else 503)
    return Response.json(out, code)


ROUTER = Router(
    [
        route("*", r"/status/v1/simple(.*)", simple),
        route("*", r"/status/v1/services(.*)", services),
    ],
    not_found,
    _guard,
)
