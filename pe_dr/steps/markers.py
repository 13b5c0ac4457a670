"""The failover drill's markers: one write into each store PE replicates, made just before the halt
through the primary's own interfaces, in objects the drill owns, and removed afterwards.

- classifier: a variable of a node group the drill creates, without a rule so that it classifies
  no node (POST /classifier-api/v1/groups);
- rbac: the description of a role the drill creates, without permissions or members (POST
  /rbac-api/v1/roles);
- puppetdb: an external fact on the first agent, sent by an agent run against the primary
  (facts.d, then `puppet agent -t --noop`), and that run's report;
- code: the commit the primary deployed last (the replication check's marker; file sync).

A drill-owned object is named `pe-dr-drill marker …` and its description carries MARKER_TAG: only
objects with both are ever removed, so nothing an admin made is touched.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import CommandFailed, PeDrError
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.polling import Pacer

ALL_NODES_ID = "00000000-0000-4000-8000-000000000000"
MARKER_TAG = "[pe-dr-drill marker: safe to delete]"
NAME_PREFIX = "pe-dr-drill marker "
FACT = "pe_dr_marker"
FACT_FILE = f"/etc/puppetlabs/facter/facts.d/{FACT}.json"
# The admin token, copied to the replica for the checks made there while the primary is down
# (PE replicates RBAC, so the replica accepts it); removed with the markers.
FAILOVER_TOKEN = "/root/.puppetlabs/pe_dr_failover_token"  # noqa: S105 (a path)
STORES = ("classifier", "rbac", "puppetdb", "code")


@dataclass(frozen=True)
class StoreMarker:
    store: str
    marker: str  # what the replica must serve
    written_at: float | None  # epoch: when the primary acknowledged the write
    ref: str = ""  # the object that carries it: a group id, a role id, a report hash, a commit
    reached_after: float | None = None  # seconds from the write to the replica serving it
    unwritten: str = ""  # why there is no marker in this store (then it is not judged)


@dataclass(frozen=True)
class Markers:
    marker: str
    agent: str
    stores: tuple[StoreMarker, ...] = field(default_factory=tuple)
    removed_before: tuple[str, ...] = ()  # what an earlier attempt left and this one removed

    def of(self, store: str) -> StoreMarker:
        return next(s for s in self.stores if s.store == store)


def is_drill_owned(name: object, description: object) -> bool:
    """Only what the drill made: its name prefix AND its tag in the description."""
    return (
        isinstance(name, str)
        and name.startswith(NAME_PREFIX)
        and isinstance(description, str)
        and MARKER_TAG in description
    )


def new_marker(run_id: str) -> str:
    """Unique per attempt: a Retry writes new markers, never trusts an earlier attempt's."""
    return f"pe-dr-drill {run_id} {uuid.uuid4().hex[:12]}"


def remove_markers(lab: Lab, *, replica_too: bool = True) -> list[str]:
    """Remove every drill-owned marker object (any run's, any attempt's); what it removed."""
    removed: list[str] = []
    primary = lab.spec.primary.name
    with lab.pe(primary) as pe:
        for group in pe.groups():
            owned = is_drill_owned(group.get("name"), group.get("description"))
            if owned and pe.delete_group(str(group["id"])):
                removed.append(f"node group {group['name']!r}")
        for role in pe.roles():
            owned = is_drill_owned(role.get("display_name"), role.get("description"))
            if owned and pe.delete_role(int(role["id"])):
                removed.append(f"role {role['display_name']!r}")
    for agent in lab.spec.agents:
        host = lab.host(agent.name)
        if host.exists(FACT_FILE, root=True):
            host.run(["rm", "-f", FACT_FILE], root=True)
            removed.append(f"{FACT_FILE} on {agent.name}")
    if replica_too:
        host = lab.host(lab.spec.replica.name)
        if host.exists(FAILOVER_TOKEN, root=True):
            host.run(["rm", "-f", FAILOVER_TOKEN], root=True)
            removed.append(f"the failover token on {lab.spec.replica.name}")
    return removed


def _deployed(lab: Lab, vm: str) -> tuple[str | None, float | None]:
    """The commit deployed in the live code of `vm` and when (.r10k-deploy.json, reference §4.6)."""
    path = f"{paths.LIVE_CODE}/{lab.spec.environment}/.r10k-deploy.json"
    out = lab.host(vm).run(["cat", path], root=True, ok_codes=(0, 1))
    if out.exit_code != 0:
        return None, None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None, None
    when = None
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(str(data.get("finished_at")).replace("Z", "+00:00"))
    return (str(data.get("signature") or "") or None), (when.timestamp() if when else None)


def _write_fact(lab: Lab, pe: PEClient, agent: str, marker: str, poll: float) -> StoreMarker:
    """The fact file on the agent, then an agent run against the primary that sends it; written
    when the primary's PuppetDB returns it. The run's report (by hash) is part of the marker."""
    host = lab.host(agent)
    host.run(["mkdir", "-p", FACT_FILE.rsplit("/", 1)[0]], root=True)
    host.put(FACT_FILE, json.dumps({FACT: marker}).encode(), mode=0o644, owner="root", group="root")
    primary = lab.spec.primary.name
    try:
        host.run(
            ["puppet", "agent", "-t", "--noop", f"--server_list={primary}"],
            root=True,
            ok_codes=(0, 2),
            timeout=1800,
        )
    except CommandFailed as exc:
        # the failover check says what is wrong with the agent; this store is not measured
        return StoreMarker(
            "puppetdb", marker, None, unwritten=f"the agent run that sends it: {exc}"
        )
    deadline = time.monotonic() + 120
    pace = Pacer(poll, deadline, what=f"PuppetDB on {primary} to store the marker fact")
    while True:
        if any(row.get("value") == marker for row in pe.fact(agent, FACT)):
            written = time.time()
            break
        if not pace.wait():
            return StoreMarker(
                "puppetdb",
                marker,
                None,
                unwritten=f"PuppetDB on {primary} did not store the fact within 120 s",
            )
    report = pe.latest_report(agent) or {}
    return StoreMarker("puppetdb", marker, written, ref=str(report.get("hash") or ""))


def write_markers(lab: Lab, *, run_id: str, budget_seconds: float, poll_interval: float) -> Markers:
    """Write a marker into each store through the primary, then watch the replica until each is
    served there (at most `budget_seconds`): how long a write took to reach the replica is what
    a primary lost now would lose of that store."""
    removed = tuple(remove_markers(lab))
    marker = new_marker(run_id)
    primary, replica = lab.spec.primary.name, lab.spec.replica.name
    agent = lab.spec.agents[0].name
    name = f"{NAME_PREFIX}{marker.split()[-1]}"
    description = f"{MARKER_TAG} written by pe-dr-drill run {run_id} before halting {primary}"
    written: dict[str, StoreMarker] = {}
    with lab.pe(primary) as pe:
        # the slow one first (an agent run), so that the others' delays are not inflated by it
        written["puppetdb"] = _write_fact(lab, pe, agent, marker, poll_interval)
        group_id = pe.create_group(
            {
                "name": name,
                "parent": ALL_NODES_ID,
                "environment": lab.spec.environment,
                "description": description,  # no rule: it classifies no node
                "classes": {},
                "variables": {FACT: marker},
            }
        )
        written["classifier"] = StoreMarker("classifier", marker, time.time(), ref=group_id)
        role_id = pe.create_role(name, f"{description}: {marker}")
        written["rbac"] = StoreMarker("rbac", marker, time.time(), ref=str(role_id))
        token = pe.token or ""
    commit, deployed_at = _deployed(lab, primary)
    written["code"] = StoreMarker(
        "code",
        commit or "",
        deployed_at,
        ref=commit or "",
        unwritten="" if commit else f"{primary} has no deployed code",
    )
    lab.host(replica).put(FAILOVER_TOKEN, token.encode(), mode=0o600, owner="root", group="root")

    reached: dict[str, float] = {}
    deadline = time.monotonic() + budget_seconds
    pace = Pacer(poll_interval, deadline, what=f"{replica} to serve the markers")
    with lab.pe(replica, token_file=FAILOVER_TOKEN) as on_replica:
        while True:
            for store, mark in written.items():
                if mark.unwritten or store in reached:
                    continue
                if served(lab, on_replica, mark, agent):
                    reached[store] = time.time()
            if len(reached) == len([m for m in written.values() if not m.unwritten]):
                break
            if not pace.wait():
                break
    stores = []
    for store in STORES:
        mark = written[store]
        after = None
        # the code was deployed before this step: when it reached the replica is not seen here
        # (the replication check measures it, as the replication lag)
        if store in reached and mark.written_at is not None and store != "code":
            after = round(max(0.0, reached[store] - mark.written_at), 3)
        stores.append(
            StoreMarker(
                store,
                mark.marker,
                mark.written_at,
                ref=mark.ref,
                reached_after=after,
                unwritten=mark.unwritten,
            )
        )
    return Markers(marker, agent, tuple(stores), removed)


def served(lab: Lab, pe: PEClient, mark: StoreMarker, agent: str) -> bool:
    """Whether the server `pe` talks to serves this marker now (False when it cannot answer)."""
    try:
        return bool(look(lab, pe, mark, agent)["has_marker"])
    except PeDrError:
        return False


def look(lab: Lab, pe: PEClient, mark: StoreMarker, agent: str) -> dict[str, object]:
    """What the server `pe` talks to serves of one store: its answer, and whether it has the
    marker. Raises PeDrError when it does not answer."""
    if mark.store == "classifier":
        groups = pe.groups()
        group = next((g for g in groups if g.get("id") == mark.ref), None)
        value = (group or {}).get("variables", {}).get(FACT) if group else None
        return {
            "groups": len(groups),
            "group_found": group is not None,
            "has_marker": value == mark.marker and bool(mark.marker),
        }
    if mark.store == "rbac":
        roles = pe.roles()
        role = next((r for r in roles if str(r.get("id")) == mark.ref), None)
        text = str((role or {}).get("description") or "")
        return {
            "roles": len(roles),
            "role_found": role is not None,
            "has_marker": bool(mark.marker) and mark.marker in text,
        }
    if mark.store == "puppetdb":
        values = [row.get("value") for row in pe.fact(agent, FACT)]
        reports = pe.pdb_query("reports", ["=", "certname", agent])
        has_report = any(r.get("hash") == mark.ref for r in reports) if mark.ref else False
        return {
            "fact": values[0] if values else None,
            "reports": len(reports),
            "marker_report": has_report,
            "has_marker": mark.marker in values and (has_report or not mark.ref),
        }
    commit, _ = _deployed(lab, pe.server)
    return {"deployed_commit": commit, "has_marker": bool(mark.marker) and commit == mark.marker}
