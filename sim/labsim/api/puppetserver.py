"""Puppet Server (`/puppet/v3/`, port 8140): catalogs and reports, as agents use them."""

from __future__ import annotations

from labsim.api.router import Call, Router, not_found, route
from labsim.http import Response
from labsim.state import now_iso


def catalog(call: Call) -> Response:
    lab, vm, req = call.lab, call.vm, call.req
    pe = lab.pe
    assert pe is not None
    certname = call.group(1)
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


def report(call: Call) -> Response:
    lab, vm = call.lab, call.vm
    received = call.req.json()
    received["receive_time"] = now_iso()
    received["producer"] = vm.name
    lab.puppetdb.write_report(lab, received)
    lab.journal(
        vm.name,
        "puppetdb.report",
        "ok",
        f"{received['certname']} {received['configuration_version']}",
    )
    return Response.json([])


ROUTER = Router(
    [
        route("GET POST", "/puppet/v3/catalog/([^/]+)", catalog),
        route("PUT", "/puppet/v3/report/([^/]+)", report),
    ],
    not_found,
)
