"""PuppetDB's query API (`/pdb/query/v4/`, port 8081) and its HA metrics (`/metrics/v2/`)."""

from __future__ import annotations

import json
import operator
import re
from typing import TYPE_CHECKING, Any

from labsim.api.common import infra_cert
from labsim.api.router import Call, Router, err, not_found, route, token_invalid
from labsim.http import Response

if TYPE_CHECKING:
    from labsim.puppetdb import Store


def _guard(call: Call) -> Response | None:
    """Who may query PuppetDB on `vm`: an allowlisted host certificate, or an RBAC token that the
    RBAC service of the console host (the primary) validates, on every request and without
    caching (clj-rbac-client `valid-token->subject`; puppetdb PR #1908; real-world-findings
    §4.1 row 1): on the replica while the primary is down, no token passes."""
    lab, req = call.lab, call.req
    pe = lab.pe
    assert pe is not None
    if not infra_cert(lab, req):
        token = req.headers.get("x-authentication") or req.query.get("token")
        if token and not lab.vms[pe.primary].serving:
            return err(
                503,
                "puppetlabs.rbac/service-unavailable",
                f"cannot validate the token: the RBAC service on {pe.primary}:4433 does not answer",
            )
        if pe.token_user(token) is None:
            return token_invalid()
    lab.puppetdb.tick(lab)
    return None


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _store(call: Call) -> Store:
    return call.lab.puppetdb.store(call.vm.name)


def metric(call: Call) -> Response:
    # Jolokia's read answer (PuppetDB metrics v2; documentation/ha.markdown "Metrics")
    name = call.group(1)
    value = call.lab.puppetdb.metric(call.lab, call.vm, name)
    mbean = f"puppetlabs.puppetdb.ha:name={name}"
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
            "value": value if call.group(2) else {"Value": value},
            "status": 200,
        }
    )


def reports(call: Call) -> Response:
    req, all_reports = call.req, _store(call).reports
    found = list(all_reports)
    q = req.query.get("query")
    if q:
        try:
            found = [r for r in found if _pql(json.loads(q), r, all_reports)]
        except (ValueError, TypeError):
            return Response.text("Invalid query", 400)
    order = req.query.get("order_by")
    if order:
        found.sort(key=lambda r: r["receive_time"], reverse="desc" in order)
    limit = req.query.get("limit")
    if limit:
        found = found[: int(limit)]
    return Response.json([_public(r) for r in found])


def facts(call: Call) -> Response:
    # one row per fact: certname, name, value, environment
    # (puppetdb documentation/api/query/v4/facts.markdown)
    rows = [
        {"certname": c, "name": n, "value": v, "environment": f.get("environment")}
        for c, f in _store(call).facts.items()
        for n, v in f.get("values", {}).items()
    ]
    q = call.req.query.get("query")
    if q:
        try:
            rows = [r for r in rows if _pql(json.loads(q), r, [])]
        except (ValueError, TypeError):
            return Response.text("Invalid query", 400)
    return Response.json(rows)


def producers(call: Call) -> Response:
    return Response.json(
        [{"name": n} for n in sorted({r["producer"] for r in _store(call).reports})]
    )


def nodes(call: Call) -> Response:
    assert call.lab.pe is not None
    return Response.json(
        [{"certname": n, "deactivated": None, "expired": None} for n in call.lab.pe.nodes]
    )


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


ROUTER = Router(
    [
        route("*", r"/metrics/v2/read/puppetlabs\.puppetdb\.ha:name=([a-z-]+)(/Value)?", metric),
        route("*", "/pdb/query/v4/reports.*", reports),
        route("*", "/pdb/query/v4/facts", facts),
        route("*", "/pdb/query/v4/producers", producers),
        route("*", "/pdb/query/v4/nodes", nodes),
    ],
    not_found,
    _guard,
)
