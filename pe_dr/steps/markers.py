"""The failover drill's markers: writes into each store PE replicates, in objects the drill owns,
removed afterwards.

- classifier: a variable of a node group the drill creates, without a rule so that it classifies
  no node (POST /classifier-api/v1/groups), rewritten as `<marker> #N` (POST .../groups/<id>);
- rbac: the description of a role the drill creates, without permissions or members (POST
  /rbac-api/v1/roles), rewritten likewise (PUT /rbac-api/v1/roles/<id>);
- puppetdb: an external fact on the first agent, sent by an agent run against the primary
  (facts.d, then `puppet agent -t --noop`), and that run's report, found by its hash;
- code: the commit the primary deployed last (the replication check's marker; file sync).

Classifier and RBAC reach the replica by database replication, so what a lost primary loses of
them is what was still in flight: the drill keeps writing `#1, #2, …` into both, one write
interval apart, through the halt itself and without waiting for the replica (`halt_while_writing`);
the newest one the replica then serves, against the moment the primary went down, is the store's
RPO. PuppetDB's writes reach both PuppetDBs directly (Puppet Server broadcasts every command:
real-world-findings §4.1 row 4), so its marker proves what the replica serves, not PuppetDB
sync; sync is judged by its own age.

A drill-owned object is named `pe-dr-drill marker …` and its description carries MARKER_TAG: only
objects with both are ever removed, so nothing an admin made is touched.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import CommandFailed, PeDrError, TransientError
from pe_dr.lab.live import Lab
from pe_dr.polling import Pacer
from pe_dr.steps import vms
from pe_dr.steps.code_manager import live_commit

ALL_NODES_ID = "00000000-0000-4000-8000-000000000000"
MARKER_TAG = "[pe-dr-drill marker: safe to delete]"
NAME_PREFIX = "pe-dr-drill marker "
FACT = "pe_dr_marker"
FACT_FILE = f"/etc/puppetlabs/facter/facts.d/{FACT}.json"
# The admin token, copied to the replica for the token path of the checks made there while the
# primary is down (the host certificate is the first path); removed with the markers.
FAILOVER_TOKEN = "/root/.puppetlabs/pe_dr_failover_token"  # noqa: S105 (a path)
STORES = ("classifier", "rbac", "puppetdb", "code")
STREAMED = ("classifier", "rbac")  # database replication: written up to the halt
# Writes the stream must have acknowledged before the halt starts (a halt under way from the
# first write would measure nothing in flight).
WRITES_BEFORE_HALT = 2


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


def _write_fact(lab: Lab, pe: PEClient, agent: str, marker: str, poll: float) -> StoreMarker:
    """The fact file on the agent, then an agent run against the primary that sends it; written
    when the primary's PuppetDB returns the fact and the run's report, a report it received after
    the agent's newest one before the run (PuppetDB's clock on both sides: no skew). The report
    is the marker's by its hash."""
    host = lab.host(agent)
    before = pe.reports_after(agent, None)
    previous = str(before[-1].get("receive_time")) if before else None
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
        return StoreMarker("puppetdb", unwritten=f"the agent run that sends it: {exc}")
    deadline = time.monotonic() + 120
    pace = Pacer(poll, deadline, what=f"PuppetDB on {primary} to store the marker fact")
    while True:
        if any(row.get("value") == marker for row in pe.fact(agent, FACT)):
            newer = pe.reports_after(agent, previous)
            if newer:
                return StoreMarker("puppetdb", ref=str(newer[-1].get("hash") or ""),
                                   written_at=time.time())  # fmt: skip
        if not pace.wait():
            return StoreMarker(
                "puppetdb",
                unwritten=f"PuppetDB on {primary} did not store the fact and its run's report "
                "within 120 s",
            )


def write_markers(lab: Lab, *, run_id: str, budget_seconds: float, poll_interval: float) -> Markers:
    """Write the first marker into each store through the primary, then watch the replica (read
    with its own host certificate, on the replica: pe_dr.lab.on_host) until it serves each, at most
    `budget_seconds`: that delay, with both servers up, is the store's replication latency."""
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
                "variables": {FACT: numbered(marker, 0)},
            }
        )
        written["classifier"] = StoreMarker("classifier", ref=group_id, written_at=time.time())
        role_id = pe.create_role(name, f"{description}: {numbered(marker, 0)}")
        written["rbac"] = StoreMarker("rbac", ref=str(role_id), written_at=time.time())
        token = pe.token or ""
    commit, deployed_at = live_commit(lab, primary)
    written["code"] = StoreMarker(
        "code",
        ref=commit or "",
        written_at=deployed_at,
        unwritten="" if commit else f"{primary} has no deployed code",
    )
    # the second path of the checks on the replica, should the replica accept tokens
    lab.host(replica).put(FAILOVER_TOKEN, token.encode(), mode=0o600, owner="root", group="root")

    reached: dict[str, float] = {}
    wanted = [s for s in ("classifier", "rbac", "puppetdb") if not written[s].unwritten]
    deadline = time.monotonic() + budget_seconds
    pace = Pacer(poll_interval, deadline, what=f"{replica} to serve the markers")
    with lab.pe_on(replica) as on_replica:
        while True:
            for store in [s for s in wanted if s not in reached]:
                if _serves_first(on_replica, written[store], marker, agent):
                    reached[store] = time.time()
            if len(reached) == len(wanted) or not pace.wait():
                break
    stores = []
    for store in STORES:
        mark = written[store]
        latency = None
        if store in reached and mark.written_at is not None:
            latency = round(max(0.0, reached[store] - mark.written_at), 3)
        stores.append(
            StoreMarker(store, mark.ref, mark.written_at, latency, unwritten=mark.unwritten)
        )
    return Markers(marker, agent, tuple(stores), removed)


def _serves_first(pe: PEClient, mark: StoreMarker, marker: str, agent: str) -> bool:
    """Whether the server `pe` talks to serves the store's first marker (False: cannot tell)."""
    try:
        if mark.store == "classifier":
            return number_in(group_marker(pe, mark.ref), marker) is not None
        if mark.store == "rbac":
            return number_in(role_marker(pe, mark.ref), marker) is not None
        return marker in fact_values(pe, agent) and pe.report(mark.ref) is not None
    except PeDrError:
        return False


def group_marker(pe: PEClient, group_id: str) -> object:
    """The marker variable of the drill's group as `pe`'s classifier serves it (None: no group)."""
    group = next((g for g in pe.groups() if g.get("id") == group_id), None)
    return (group.get("variables") or {}).get(FACT) if group else None


def role_marker(pe: PEClient, role_id: str) -> object:
    """The description of the drill's role as `pe`'s RBAC serves it (None: no role)."""
    role = next((r for r in pe.roles() if str(r.get("id")) == role_id), None)
    return role.get("description") if role else None


def fact_values(pe: PEClient, agent: str) -> list[object]:
    return [row.get("value") for row in pe.fact(agent, FACT)]


class MarkerStream:
    """Writes `marker #1, #2, …` into the classifier group and the RBAC role through the primary,
    one `interval` apart, on a thread of its own, until stopped; keeps each acknowledgement."""

    def __init__(self, lab: Lab, markers: Markers, interval: float) -> None:
        self.markers = markers
        self.interval = interval
        self.writes: dict[str, list[tuple[int, float]]] = {s: [] for s in STREAMED}
        self.refused: dict[str, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._acked = threading.Condition()
        self._pe = lab.pe(lab.spec.primary.name)
        # a write the halt cuts short must not hold the stream for the client's 30 s
        self._pe._http.timeout = httpx.Timeout(max(2.0, interval * 5))
        role = self._pe.role(int(markers.of("rbac").ref))
        self._writers: dict[str, Callable[[int], object]] = {
            "classifier": lambda n: self._pe.update_group(
                markers.of("classifier").ref, {"variables": {FACT: numbered(markers.marker, n)}}
            ),
            "rbac": lambda n: self._pe.replace_role(
                {**role, "description": _described(role, numbered(markers.marker, n))}
            ),
        }
        self._thread = threading.Thread(target=self._run, name="pe-dr-marker-stream", daemon=True)

    def __enter__(self) -> MarkerStream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)
        self._pe.close()

    def wait_for_writes(self, count: int, timeout: float) -> bool:
        """Until every store acknowledged `count` writes (False: a store refused, or timeout)."""
        end = time.monotonic() + timeout
        with self._acked:
            while not all(len(w) >= count for w in self.writes.values()):
                left = end - time.monotonic()
                if self.refused or left <= 0:
                    return False
                self._acked.wait(left)
        return True

    def _run(self) -> None:
        start = time.monotonic()
        number = 1
        while not self._stop.is_set():
            for store, write in self._writers.items():
                if store in self.refused:
                    continue
                try:
                    write(number)
                except PeDrError as exc:
                    with self._acked:
                        self.refused[store] = (time.time(), str(exc))
                        self._acked.notify_all()
                    continue
                with self._acked:
                    self.writes[store].append((number, time.time()))
                    self._acked.notify_all()
            if len(self.refused) == len(self._writers):
                return  # the primary is gone: nothing more can be written
            number += 1
            # a fixed grid: the writes do not drift by their own duration
            self._stop.wait(max(0.0, start + (number - 1) * self.interval - time.monotonic()))


def _described(role: dict[str, object], text: str) -> str:
    """The role's description with its marker replaced by `text` (the tag kept)."""
    head = str(role.get("description") or "").rsplit(": ", 1)[0]
    return f"{head}: {text}"


def halt_while_writing(
    lab: Lab, vm: str, confirm: list[str], markers: Markers, interval: float
) -> Outage:
    """Halt `vm` (the primary) while the marker stream writes into the classifier and RBAC up to
    the moment it goes down, without waiting for the replica: what was acknowledged and had not
    reached the replica is what a primary lost at that instant loses."""
    vms.require_confirmation(lab.spec.host(vm).name, confirm, "halt")
    with MarkerStream(lab, markers, interval) as stream:
        if not stream.wait_for_writes(WRITES_BEFORE_HALT, timeout=max(60.0, interval * 20)):
            why = "; ".join(f"{s}: {r}" for s, (_, r) in stream.refused.items()) or "timed out"
            raise TransientError(
                f"the marker stream into {lab.spec.primary.name} did not start ({why}), "
                "so nothing in flight at the halt could be measured; the primary was not halted"
            )
        started = time.time()
        vms.halt_vm(lab, vm, confirm)
        returned = time.time()
    refused_after = [at for at, _ in stream.refused.values() if at >= started]
    down = min([returned, *refused_after])
    return Outage(
        halt_started_at=started,
        halt_returned_at=returned,
        down_at=down,
        interval=interval,
        writes={s: tuple(w) for s, w in stream.writes.items()},
        refused={s: why for s, (_, why) in stream.refused.items()},
    )
