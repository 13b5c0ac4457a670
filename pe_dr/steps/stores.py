"""The stores PE replicates to the replica, one class each, in one registry (STORES): how the
failover drill writes its marker into the store through the primary, sees the replica serve it,
streams into it up to the halt, reads what the replica serves during the outage, and removes what
it wrote. A new store is one class and one entry in STORES; the drill (pe_dr.steps.markers) and
its judgement (pe_dr.checks.rpo) read the registry.

- classifier: a variable of a node group the drill creates, without a rule so that it classifies
  no node (POST /classifier-api/v1/groups), rewritten as `<marker> #N` (POST .../groups/<id>);
- rbac: the description of a role the drill creates, without permissions or members (POST
  /rbac-api/v1/roles), rewritten likewise (PUT /rbac-api/v1/roles/<id>);
- puppetdb: an external fact on the first agent, sent by an agent run against the primary
  (facts.d, then `puppet agent -t --noop`), and that run's report, found by its hash;
- code: the commit the primary deployed last (file sync), read in the live code over SSH.

The replica is read the way PE's own services read it: on the replica, with its host certificate
(pe_dr.lab.on_host), and by the admin token copied there (real-world-findings §4.1 rows 1-2); a
look says which path answered and what the other one said.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pe_dr.clients.pe_api import PUPPETDB_PORT, RBAC_PORT, PEClient
from pe_dr.errors import CommandFailed, PeDrError
from pe_dr.lab.live import Lab
from pe_dr.parsing.pe import last_sync_age
from pe_dr.polling import Pacer
from pe_dr.steps.code_manager import live_commit

ALL_NODES_ID = "00000000-0000-4000-8000-000000000000"
MARKER_TAG = "[pe-dr-drill marker: safe to delete]"
NAME_PREFIX = "pe-dr-drill marker "
FACT = "pe_dr_marker"
FACT_FILE = f"/etc/puppetlabs/facter/facts.d/{FACT}.json"
CERTIFICATE, TOKEN = "certificate", "token"  # the two paths a look on the replica takes


@dataclass(frozen=True)
class StoreMarker:
    store: str
    ref: str = ""  # the object that carries it: a group id, a role id, a report hash, a commit
    written_at: float | None = None  # epoch: when the primary acknowledged the first marker
    # seconds from that write to the replica serving it, both servers up: replication latency
    latency: float | None = None
    unwritten: str = ""  # why there is no marker in this store (then it is not judged)


@dataclass(frozen=True)
class Markers:
    marker: str
    agent: str
    stores: tuple[StoreMarker, ...] = field(default_factory=tuple)
    removed_before: tuple[str, ...] = ()  # what an earlier attempt left and this one removed

    def of(self, store: str) -> StoreMarker:
        return next(s for s in self.stores if s.store == store)


@dataclass(frozen=True)
class Outage:
    """The halt, as the marker stream saw it (epoch times)."""

    halt_started_at: float
    halt_returned_at: float
    # the primary went down: the first write it refused after the halt began, or the halt's end
    down_at: float
    interval: float  # between two writes of the stream
    writes: dict[str, tuple[tuple[int, float], ...]]  # store -> ((number, acknowledged at), ...)
    refused: dict[str, str] = field(default_factory=dict)  # store -> the first refusal

    def acked(self, store: str, number: int) -> float | None:
        return next((at for n, at in self.writes.get(store, ()) if n == number), None)

    def newest(self, store: str) -> int | None:
        numbers = [n for n, _ in self.writes.get(store, ())]
        return max(numbers) if numbers else None


@dataclass(frozen=True)
class StoreSeen:
    """One store as the drill saw it on the replica during the outage."""

    store: str
    answered_by: str | None  # the path that answered: certificate, token (code: ssh)
    paths: dict[str, str]  # each path tried: "answered" or what it said instead
    has_marker: bool
    seen: dict[str, Any] = field(default_factory=dict)
    latency: float | None = None  # first marker: written -> served by the replica, both up
    rpo: float | None = None  # streamed stores: down -> acknowledgement of the newest served
    newest_written: int | None = None
    newest_served: int | None = None
    sync_age: float | None = None  # PuppetDB: its last sync's age when the primary went down
    replication: dict[str, Any] | None = None  # what the replica's status API says of it
    unwritten: str = ""  # no marker could be written: served data is not judged

    @property
    def lost_writes(self) -> int | None:
        if self.newest_written is None or self.newest_served is None:
            return None
        return max(0, self.newest_written - self.newest_served)

    @property
    def judged(self) -> bool:
        return not self.unwritten

    def to_json(self) -> dict[str, object]:
        return {
            "answered_by": self.answered_by,
            "paths": dict(self.paths),
            "marker_on_replica": self.has_marker,
            "replication_latency_s": self.latency,
            "rpo_seconds": self.rpo,
            "newest_written": self.newest_written,
            "newest_served": self.newest_served,
            "lost_writes": self.lost_writes,
            "sync_age_at_halt_s": self.sync_age,
            "replication_reported": self.replication,
            "seen": dict(self.seen),
            "not_measured": self.unwritten or None,
        }


@dataclass(frozen=True)
class Writing:
    """What every store's first write needs: the primary's API (admin token) and the names."""

    lab: Lab
    pe: PEClient
    marker: str
    agent: str  # the agent whose fact and report carry PuppetDB's marker
    name: str  # of the drill-owned objects
    description: str  # of the drill-owned objects, with MARKER_TAG
    poll: float


@dataclass(frozen=True)
class Looking:
    """What every look on the replica during the outage needs."""

    lab: Lab
    paths: dict[str, PEClient | None]  # CERTIFICATE, TOKEN (None: no token on the replica)
    markers: Markers
    outage: Outage
    reported: dict[str, Any]  # database replication as the replica's status reports it


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


def numbered(marker: str, number: int) -> str:
    return f"{marker} #{number}"


def number_in(text: object, marker: str) -> int | None:
    """The number of the newest `marker #N` in `text` (None: not this drill's marker)."""
    if not isinstance(text, str) or not marker:
        return None
    found = re.findall(rf"{re.escape(marker)} #(\d+)", text)
    return max(int(n) for n in found) if found else None


def read_by(paths: dict[str, PEClient | None], look: Callable[[PEClient], Any]) -> tuple[
    str | None, Any, dict[str, str]
]:  # fmt: skip
    """`look` through each path in turn: the first path that answered, its answer, and what every
    path said."""
    said: dict[str, str] = {}
    first: tuple[str | None, Any] = (None, None)
    for name, pe in paths.items():
        if pe is None:
            said[name] = "not available (no token on the replica)"
            continue
        try:
            answer = look(pe)
        except PeDrError as exc:
            said[name] = str(exc)
            continue
        said[name] = "answered"
        if first[0] is None:
            first = (name, answer)
    return first[0], first[1], said


class Store:
    """One replicated store. `streamed`: database replication, written `#1, #2, …` up to the
    halt, so its RPO is measured; `watched`: its first marker is watched until the replica
    serves it (replication latency); `first`: written before the others (a slow write)."""

    name: ClassVar[str]
    streamed: ClassVar[bool] = False
    watched: ClassVar[bool] = True
    first: ClassVar[bool] = False
    status_service: ClassVar[str] = ""  # its service in PE's status, which reports replication

    def write(self, at: Writing) -> StoreMarker:
        """The first marker, through the primary."""
        raise NotImplementedError

    def serves(self, pe: PEClient, mark: StoreMarker, markers: Markers) -> bool:
        """Whether the server `pe` talks to serves the first marker (raises when it cannot say)."""
        raise NotImplementedError

    def streamer(self, pe: PEClient, markers: Markers) -> Callable[[int], object]:
        """The stream's n-th write through the primary (streamed stores)."""
        raise NotImplementedError

    def look(self, at: Looking, mark: StoreMarker) -> StoreSeen:
        """What the replica serves of the store during the outage."""
        raise NotImplementedError

    def remove(self, lab: Lab, pe: PEClient) -> list[str]:
        """Remove every drill-owned object of the store (any run's); what it removed."""
        return []


class Streamed(Store):
    """A database-replicated store: its marker is a text the drill rewrites as `<marker> #N`."""

    streamed = True

    def value(self, pe: PEClient, ref: str) -> object:
        """The marker text as `pe` serves it (None: no such object)."""
        raise NotImplementedError

    def serves(self, pe: PEClient, mark: StoreMarker, markers: Markers) -> bool:
        return number_in(self.value(pe, mark.ref), markers.marker) is not None

    def look(self, at: Looking, mark: StoreMarker) -> StoreSeen:
        """The newest marker the replica serves, and the store's RPO."""
        by, value, said = read_by(at.paths, lambda pe: self.value(pe, mark.ref))
        served = number_in(value, at.markers.marker)
        acked = None
        if served is not None:
            acked = at.outage.acked(self.name, served) if served else mark.written_at
        return StoreSeen(
            self.name,
            by,
            said,
            served is not None,
            {"value": value},
            latency=mark.latency,
            rpo=None if acked is None else round(max(0.0, at.outage.down_at - acked), 3),
            newest_written=at.outage.newest(self.name) or 0,
            newest_served=served,
            replication=at.reported.get(self.name),
            unwritten=mark.unwritten,
        )


def group_marker(pe: PEClient, group_id: str) -> object:
    """The marker variable of the drill's group as `pe`'s classifier serves it (None: no group)."""
    group = next((g for g in pe.groups() if g.get("id") == group_id), None)
    return (group.get("variables") or {}).get(FACT) if group else None


class Classifier(Streamed):
    name = "classifier"
    status_service = "classifier-service"

    def write(self, at: Writing) -> StoreMarker:
        group_id = at.pe.create_group(
            {
                "name": at.name,
                "parent": ALL_NODES_ID,
                "environment": at.lab.spec.environment,
                "description": at.description,  # no rule: it classifies no node
                "classes": {},
                "variables": {FACT: numbered(at.marker, 0)},
            }
        )
        return StoreMarker(self.name, ref=group_id, written_at=time.time())

    def value(self, pe: PEClient, ref: str) -> object:
        return group_marker(pe, ref)

    def streamer(self, pe: PEClient, markers: Markers) -> Callable[[int], object]:
        ref = markers.of(self.name).ref
        return lambda n: pe.update_group(ref, {"variables": {FACT: numbered(markers.marker, n)}})

    def remove(self, lab: Lab, pe: PEClient) -> list[str]:
        return _remove_owned(pe.groups(), "name", lambda i: pe.delete_group(str(i)), "node group")


class RBAC(Streamed):
    name = "rbac"
    status_service = "rbac-service"

    def write(self, at: Writing) -> StoreMarker:
        role_id = at.pe.create_role(at.name, f"{at.description}: {numbered(at.marker, 0)}")
        return StoreMarker(self.name, ref=str(role_id), written_at=time.time())

    def value(self, pe: PEClient, ref: str) -> object:
        """The description of the drill's role as `pe`'s RBAC serves it (None: no role)."""
        role = next((r for r in pe.roles() if str(r.get("id")) == ref), None)
        return role.get("description") if role else None

    def streamer(self, pe: PEClient, markers: Markers) -> Callable[[int], object]:
        role = pe.role(int(markers.of(self.name).ref))

        def write(n: int) -> object:
            # the role's description with its marker replaced (the tag kept)
            head = str(role.get("description") or "").rsplit(": ", 1)[0]
            return pe.replace_role(
                {**role, "description": f"{head}: {numbered(markers.marker, n)}"}
            )

        return write

    def remove(self, lab: Lab, pe: PEClient) -> list[str]:
        return _remove_owned(pe.roles(), "display_name", lambda i: pe.delete_role(int(i)), "role")


def _remove_owned(
    items: list[dict[str, Any]], name_key: str, delete: Callable[[Any], bool], what: str
) -> list[str]:
    """Delete the drill's own objects among `items` (named and tagged as its: is_drill_owned),
    never an admin's; what was deleted, as `what 'name'`."""
    return [
        f"{what} {item[name_key]!r}"
        for item in items
        if is_drill_owned(item.get(name_key), item.get("description")) and delete(item["id"])
    ]


def fact_values(pe: PEClient, agent: str) -> list[object]:
    return [row.get("value") for row in pe.fact(agent, FACT)]


def sync_age(pe: PEClient) -> tuple[float | None, str]:
    """Seconds since PuppetDB's last successful sync, read now: its status alert, else its
    metric; and where it came from."""
    try:
        status = pe.services(PUPPETDB_PORT).get("puppetdb-status") or {}
    except PeDrError:
        status = {}
    age = last_sync_age(status.get("active_alerts") or [])
    if age is not None:
        return age, "status"
    try:
        age = pe.pdb_metric("seconds-since-last-successful-sync")
    except PeDrError:
        age = None
    return age, "metric" if age is not None else "none"


class PuppetDB(Store):
    """Every write reaches both PuppetDBs (command broadcast: §4.1 row 4), so its marker proves
    what the replica serves; its sync, which repairs what one side missed, is judged by its own
    age at the halt."""

    name = "puppetdb"
    first = True  # an agent run: the others' delays are not inflated by it

    def write(self, at: Writing) -> StoreMarker:
        """The fact file on the agent, then an agent run against the primary that sends it;
        written when the primary's PuppetDB returns the fact and the run's report, a report it
        received after the agent's newest one before the run (PuppetDB's clock on both sides: no
        skew). The report is the marker's by its hash."""
        pe, agent, marker = at.pe, at.agent, at.marker
        host = at.lab.host(agent)
        before = pe.reports_after(agent, None)
        previous = str(before[-1].get("receive_time")) if before else None
        host.run(["mkdir", "-p", FACT_FILE.rsplit("/", 1)[0]], root=True)
        host.put(FACT_FILE, json.dumps({FACT: marker}).encode(), mode=0o644, owner="root",
                 group="root")  # fmt: skip
        primary = at.lab.spec.primary.name
        try:
            host.run(
                ["puppet", "agent", "-t", "--noop", f"--server_list={primary}"],
                root=True,
                ok_codes=(0, 2),
                timeout=1800,
            )
        except CommandFailed as exc:
            # the failover check says what is wrong with the agent; this store is not measured
            return StoreMarker(self.name, unwritten=f"the agent run that sends it: {exc}")
        deadline = time.monotonic() + 120
        pace = Pacer(at.poll, deadline, what=f"PuppetDB on {primary} to store the marker fact")
        while True:
            if any(row.get("value") == marker for row in pe.fact(agent, FACT)):
                newer = pe.reports_after(agent, previous)
                if newer:
                    return StoreMarker(self.name, ref=str(newer[-1].get("hash") or ""),
                                       written_at=time.time())  # fmt: skip
            if not pace.wait():
                return StoreMarker(
                    self.name,
                    unwritten=f"PuppetDB on {primary} did not store the fact and its run's "
                    "report within 120 s",
                )

    def serves(self, pe: PEClient, mark: StoreMarker, markers: Markers) -> bool:
        return markers.marker in fact_values(pe, markers.agent) and pe.report(mark.ref) is not None

    def look(self, at: Looking, mark: StoreMarker) -> StoreSeen:
        """The marker fact and its run's report (by hash), and the sync's age at the halt."""

        def read(pe: PEClient) -> dict[str, Any]:
            values = fact_values(pe, at.markers.agent)
            report = pe.report(mark.ref) if mark.ref else None
            return {
                "fact": values[0] if values else None,
                "marker_report": report is not None,
                "report_producer": (report or {}).get("producer"),
            }

        by, seen, said = read_by(at.paths, read)
        seen = dict(seen or {})
        at_halt = None
        cert = at.paths[CERTIFICATE]
        if cert is not None:
            read_at = time.time()
            age, source = sync_age(cert)
            seen["sync_age_from"] = source
            if age is not None:  # the last sync happened `age` s before `read_at`
                at_halt = round(max(0.0, age - (read_at - at.outage.down_at)), 3)
        return StoreSeen(
            self.name,
            by,
            said,
            seen.get("fact") == at.markers.marker and bool(seen.get("marker_report")),
            seen,
            latency=mark.latency,
            sync_age=at_halt,
            unwritten=mark.unwritten,
        )

    def remove(self, lab: Lab, pe: PEClient) -> list[str]:
        removed = []
        for agent in lab.spec.agents:
            host = lab.host(agent.name)
            if host.exists(FACT_FILE, root=True):
                host.run(["rm", "-f", FACT_FILE], root=True)
                removed.append(f"{FACT_FILE} on {agent.name}")
        return removed


class Code(Store):
    """The commit the primary deployed last; the replica's live code must name it (file sync,
    read over SSH: it has no API on the replica). Not watched: the replication check times it."""

    name = "code"
    watched = False

    def write(self, at: Writing) -> StoreMarker:
        primary = at.lab.spec.primary.name
        commit, deployed_at = live_commit(at.lab, primary)
        return StoreMarker(
            self.name,
            ref=commit or "",
            written_at=deployed_at,
            unwritten="" if commit else f"{primary} has no deployed code",
        )

    def look(self, at: Looking, mark: StoreMarker) -> StoreSeen:
        try:
            commit, _ = live_commit(at.lab, at.lab.spec.replica.name)
        except PeDrError as exc:
            return StoreSeen(self.name, None, {"ssh": str(exc)}, False, unwritten=mark.unwritten)
        return StoreSeen(
            self.name,
            "ssh",
            {"ssh": "answered"},
            bool(mark.ref) and commit == mark.ref,
            {"deployed_commit": commit},
            unwritten=mark.unwritten,
        )


# The registry: every store the drill proves, in the journal's order. The drill reads it when it
# runs (never a copy made at import), so this tuple is the one place a store is named.
STORES: tuple[Store, ...] = (Classifier(), RBAC(), PuppetDB(), Code())


def store(name: str) -> Store:
    return next(s for s in STORES if s.name == name)


def streamed() -> tuple[str, ...]:
    """The stores written up to the halt, whose RPO is measured."""
    return tuple(s.name for s in STORES if s.streamed)


def replication_reported(pe: PEClient) -> dict[str, dict[str, Any] | None]:
    """Database replication of each store as the replica's status API reports it
    (`status.replication`, PDF-2021.7.1 p.436-440; peadm spec/fixtures/infrastatus.json)."""
    found: dict[str, dict[str, Any] | None] = {s.name: None for s in STORES if s.status_service}
    try:
        services = pe.services(RBAC_PORT)
    except PeDrError:
        return found
    for s in STORES:
        if s.status_service:
            status = (services.get(s.status_service) or {}).get("status") or {}
            found[s.name] = status.get("replication") if isinstance(status, dict) else None
    return found
