"""The tutorial's step 5, promote the replica: promote, re-point the client tools, forget the old
primary.

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

import json

from pe_dr.errors import (
    CommandFailed,
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


# where `puppet access login` saves a token and PE's commands look for one
DEFAULT_TOKEN = "/root/.puppetlabs/token"  # noqa: S105 (a path)
CLIENT_TOOLS_DIR = "/etc/puppetlabs/client-tools"
# the global client-tools files and where each names its service (help.puppet.com
# "Configuring and using PE client tools")
CLIENT_TOOLS = {
    "puppet-access.conf": ("service-url", 4433, "/rbac-api"),
    "puppet-code.conf": ("service-url", 8170, "/code-manager"),
    "orchestrator.conf": ("options.service-url", 8143, ""),
}


def client_tools_naming(lab: Lab, server: str) -> dict[str, str]:
    """Each global client-tools file on `server` and the service URL it names."""
    host = lab.host(server)
    named: dict[str, str] = {}
    for name, (key, _port, _path) in CLIENT_TOOLS.items():
        file = f"{CLIENT_TOOLS_DIR}/{name}"
        if not host.exists(file, root=True):
            named[file] = "(missing)"
            continue
        try:
            data = json.loads(host.read(file, root=True))
        except ValueError:
            named[file] = "(not JSON)"
            continue
        holder = data.get("options", {}) if key.startswith("options.") else data
        named[file] = str(holder.get("service-url") or "(no service-url)")
    return named


def ensure_client_tools_point_at(lab: Lab, server: str) -> dict[str, str]:
    """PE's client-tools configuration on the new primary names it. PE manages these files
    (`puppet_enterprise::profile::controller`: PE manual p.809, p.320-321, p.615;
    real-world-findings §4.2 row 8): a Puppet run on the promoted server writes them for the new
    primary, and an edit by hand would be overwritten. So the drill runs Puppet there when they
    still name another server, and verifies; it never writes them."""
    wanted = {f"{CLIENT_TOOLS_DIR}/{n}": f"https://{server}:{p}{path}"
              for n, (_k, p, path) in CLIENT_TOOLS.items()}  # fmt: skip
    named = client_tools_naming(lab, server)
    if named == wanted:
        return named
    lab.host(server).run(["puppet", "agent", "-t"], root=True, ok_codes=(0, 2), timeout=1800)
    named = client_tools_naming(lab, server)
    wrong = {f: u for f, u in named.items() if u != wanted[f]}
    if wrong:
        listed = ", ".join(f"{f} names {u}" for f, u in wrong.items())
        raise TransientError(
            f"after a Puppet run on {server}, its client tools still point elsewhere: {listed}"
        )
    return named


def forget_old_primary(lab: Lab) -> str:
    """The old primary forgotten, on the new one. PE documents `puppet infrastructure forget`
    with the admin token in its default place and no `--token-file` (PE manual p.270,
    p.281-282), so the token goes there; when forget fails, `puppet node purge` is peadm's
    recovery procedure (documentation/recovery/recovery.md). Success is read from PuppetDB on the
    new primary (the old one no longer active, GET /pdb/query/v4/nodes), never from an exit code:
    forget exits non-zero for many reasons (peadm perform_failover.pp; findings §1 row 7)."""
    replica, old = lab.spec.replica.name, lab.spec.primary.name
    if not _active_node(lab, replica, old):
        return "already forgotten"
    host = lab.host(replica)
    token = lab.token(replica, paths.ADMIN_TOKEN)
    host.put(DEFAULT_TOKEN, token.encode(), mode=0o600, owner="root", group="root")
    how = "forgotten"
    try:
        host.run(["puppet", "infrastructure", "forget", old], root=True, timeout=1800)
    except CommandFailed as forget_failed:
        how = f"purged (forget failed: {forget_failed})"
        host.run(["puppet", "node", "purge", old], root=True, timeout=1800)
    if _active_node(lab, replica, old):
        raise TransientError(f"{old} is still active in PuppetDB on {replica} after it was {how}")
    return how


def _active_node(lab: Lab, server: str, certname: str) -> bool:
    with lab.pe(server) as pe:
        nodes = pe.pdb_query("nodes", ["=", "certname", certname])
    return any(
        n.get("certname") == certname and not n.get("deactivated") and not n.get("expired")
        for n in nodes
    )
