"""PE's node classifier (`/classifier-api/`, port 4433): node groups."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from labsim.api.common import auth, merge, read_only
from labsim.api.router import Call, Router, err, no_route, route, token_invalid
from labsim.http import Response
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


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


def _groups(lab: Lab, vm: VM) -> list[dict[str, Any]]:
    """The node groups the classifier serves on `vm` (the replica's replicated copy there)."""
    pe = lab.pe
    assert pe is not None
    if read_only(lab, vm) and pe.replica_enabled and not pe.promoted:
        groups = list(lab.replication.view(lab, "classifier").get("groups", []))
        for n, group in enumerate(groups):
            for key, value in lab.replica_group_edits.get(group["id"], {}).items():
                merged = dict(group.get(key) or {})
                merge(merged, value)
                groups[n] = {**groups[n], key: merged}
        return groups
    return pe.groups


def _guard(call: Call) -> Response | None:
    return token_invalid() if auth(call.lab, call.req, call.vm) is None else None


def list_groups(call: Call) -> Response:
    return Response.json(_groups(call.lab, call.vm))


def create_group(call: Call) -> Response:
    # POST /v1/groups: the classifier picks the id; 303 See Other, Location the new group
    # (DA-2018.1 groups_endpoint.md)
    pe = call.pe
    if read_only(call.lab, call.vm):
        return err(403, "read-only", "The classifier is read-only on a replica.")
    body = call.req.json()
    if not body.get("name") or not body.get("parent") or "classes" not in body:
        return err(400, "schema-violation", "name, parent and classes are required")
    if any(x["name"] == body["name"] for x in pe.groups):
        return err(422, "uniqueness-violation", f"A group named {body['name']!r} exists.")
    if not any(x["id"] == body["parent"] for x in pe.groups):
        return err(422, "missing-parent", f"The parent {body['parent']} does not exist.")
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


def group(call: Call) -> Response:
    """GET, DELETE or POST (an edit) one group; an unknown id is 404 for each."""
    lab, vm, m = call.lab, call.vm, call.req.method
    pe = call.pe
    g = next((x for x in _groups(lab, vm) if x["id"] == call.group(1)), None)
    if g is None:
        return err(404, "not-found", f"The group with id {call.group(1)} does not exist.")
    if m == "GET":
        return Response.json(g)
    if m == "DELETE":
        # DELETE /v1/groups/<id>: 204; refused while it has children (groups_endpoint.md)
        if read_only(lab, vm):
            return _classification_edit_refused(lab)
        if any(x["parent"] == g["id"] and x["id"] != g["id"] for x in pe.groups):
            return err(422, "children-present", "The group has children.")
        pe.groups = [x for x in pe.groups if x["id"] != g["id"]]
        return Response(204)
    if m != "POST":
        return no_route(call.req)
    if read_only(lab, vm):
        if lab.faults.has("replica-classifier-writable"):
            return _replica_edit(lab, g, call.req.json())
        return _classification_edit_refused(lab)
    delta = call.req.json()
    if "serial_number" in delta and delta["serial_number"] != g["serial_number"]:
        return err(409, "conflict", "serial number mismatch")
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
            merge(g.setdefault(key, {}), delta[key])
    for key in ("name", "environment", "description", "parent", "rule"):
        if key in delta:
            g[key] = delta[key]
    g["serial_number"] += 1
    g["last_edited"] = now_iso()
    return Response.json(g)


def _classification_edit_refused(lab: Lab) -> Response:
    """A classification edit on a replica. PE documents that it "doesn't work" during failover
    but not the answer (PDF-2021.7.1 p.269; real-world-findings §4.1 row 3): labsim answers one
    that does not say why (the stricter answer: a drill cannot take it as proof), and the fault
    `replica:says-read-only` the answer that names the read-only replica."""
    if lab.faults.has("replica-says-read-only"):
        return err(
            403,
            "puppetlabs.classifier/read-only",
            "The node classifier on a replica is read-only; edit classification on the primary.",
        )
    return err(403, "puppetlabs.rbac/permission-denied", "Permission denied")


def _replica_edit(lab: Lab, group: dict[str, Any], delta: dict[str, Any]) -> Response:
    """`replica:classifier-writable`: a replica that accepts an edit (what a drill must catch);
    the edit lives on the replica's copy only."""
    edits = lab.replica_group_edits.setdefault(group["id"], {})
    for key in ("classes", "config_data", "variables"):
        if key in delta:
            merge(edits.setdefault(key, {}), delta[key])
    edited = dict(group)
    for key, value in edits.items():
        merged = dict(edited.get(key) or {})
        merge(merged, value)
        edited[key] = merged
    return Response.json(edited)


ROUTER = Router(
    [
        route("GET", "/classifier-api/v1/groups", list_groups),
        route("POST", "/classifier-api/v1/groups", create_group),
        route("*", "/classifier-api/v1/groups/([0-9a-f-]+)", group),
    ],
    no_route,
    _guard,
)
