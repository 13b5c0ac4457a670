"""The tutorial's step 5, promote the replica: promote, re-point the client tools, forget the old
primary.

Plain Python over a Lab: look, act only if needed; pe_dr.tasks makes a Prefect task of each.
"""

from __future__ import annotations

import json

from pe_dr.errors import (
    PreconditionError,
    TransientError,
)
from pe_dr.lab import paths
from pe_dr.lab.live import Lab


def promote_replica(lab: Lab) -> str:
    """`puppet infrastructure promote replica` on the replica, only once the primary is gone.

    PE requires the old primary to be permanently offline (PDF-2021.7.1 p.280) and the command
    does not check it, so the drill does: vagrant must not run it and its Puppet Server must not
    answer. Whether the replica is already the primary is read from PE itself (its services),
    not from a port that an enabled replica opens too."""
    replica, primary = lab.spec.replica.name, lab.spec.primary.name
    state = lab.vagrant.state(primary)
    seen = lab.probe_puppetserver(primary)
    if state == "running" or seen == "answering":
        raise PreconditionError(
            f"refusing to promote {replica}: {primary} is {state} and its Puppet Server on 8140 "
            f"is {seen}; PE requires the old primary to be permanently offline"
        )
    if is_primary(lab, replica):
        return "already promoted"
    lab.host(replica).run(
        [
            "puppet",
            "infrastructure",
            "promote",
            "replica",
            "--topology",
            "mono",
            "--yes",
            "--color",
            "false",
        ],
        root=True,
        timeout=7200,
    )
    if not is_primary(lab, replica):
        raise TransientError(f"`promote replica` finished but {replica} does not serve as primary")
    return "promoted"


def is_primary(lab: Lab, server: str) -> bool:
    """Whether PE runs `server` as its primary: only the primary runs the file sync storage
    service, which its Puppet Server status lists (GET :8140/status/v1/services, as peadm's
    tasks/code_sync_status.rb reads it); a replica runs only the file sync client."""
    try:
        with lab.pe(server, token_file=None) as pe:
            services = pe.services(8140)
    except TransientError:
        return False
    storage = services.get("file-sync-storage-service")
    return isinstance(storage, dict) and storage.get("state") == "running"


CLIENT_TOOLS_DIR = "/etc/puppetlabs/client-tools"


CLIENT_TOOLS = {
    "puppet-access.conf": ("service-url", 4433, "/rbac-api"),
    "puppet-code.conf": ("service-url", 8170, "/code-manager"),
    "orchestrator.conf": ("options.service-url", 8143, ""),
}


def ensure_client_tools_point_at(lab: Lab, server: str) -> list[str]:
    """PE's global client-tools configuration on `server` names `server` itself: promotion leaves
    it naming the old primary, and PE's procedure says to update it (PE 2019.7-2021.7
    dr_configure, "Promote a replica", step 3; help.puppet.com "Configuring and using PE client
    tools"). Returns the files rewritten."""
    host = lab.host(server)
    changed = []
    for name, (key, port, path) in CLIENT_TOOLS.items():
        file = f"{CLIENT_TOOLS_DIR}/{name}"
        if not host.exists(file, root=True):
            continue
        try:
            data = json.loads(host.read(file, root=True))
        except ValueError:
            raise PreconditionError(f"{file} on {server} is not JSON") from None
        wanted = f"https://{server}:{port}{path}"
        holder = data.setdefault("options", {}) if key.startswith("options.") else data
        if holder.get("service-url") == wanted:
            continue
        holder["service-url"] = wanted
        text = json.dumps(data, indent=2) + "\n"
        host.put(file, text.encode(), mode=0o644, owner="root", group="root")
        changed.append(file)
    return changed


def forget_old_primary(lab: Lab) -> str:
    """`puppet infrastructure forget` of the old primary, on the new one. "Already forgotten" is
    read from PE (PuppetDB on the new primary no longer lists it as active, GET
    /pdb/query/v4/nodes), never from an exit code: forget exits non-zero for many reasons
    (peadm spec/acceptance/peadm_spec/plans/perform_failover.pp; real-world-findings §1 row 7)."""
    replica, old = lab.spec.replica.name, lab.spec.primary.name
    if not _active_node(lab, replica, old):
        return "already forgotten"
    lab.host(replica).run(
        ["puppet", "infrastructure", "forget", old, "--token-file", paths.ADMIN_TOKEN],
        root=True,
        timeout=1800,
    )
    if _active_node(lab, replica, old):
        raise TransientError(f"`puppet infrastructure forget {old}` finished but PuppetDB lists it")
    return "forgotten"


def _active_node(lab: Lab, server: str, certname: str) -> bool:
    with lab.pe(server) as pe:
        nodes = pe.pdb_query("nodes", ["=", "certname", certname])
    return any(
        n.get("certname") == certname and not n.get("deactivated") and not n.get("expired")
        for n in nodes
    )
