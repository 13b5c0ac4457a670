"""The failover drill's markers: writes into each store PE replicates (the registry of stores:
pe_dr.steps.stores), in objects the drill owns, removed afterwards.

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

import threading
import time
from collections.abc import Callable

import httpx

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import PeDrError, TransientError
from pe_dr.lab.live import Lab
from pe_dr.polling import Pacer
from pe_dr.steps import stores, vms
from pe_dr.steps.stores import (
    MARKER_TAG,
    NAME_PREFIX,
    Markers,
    Outage,
    Store,
    StoreMarker,
    Writing,
    new_marker,
)

# The admin token, copied to the replica for the token path of the checks made there while the
# primary is down (the host certificate is the first path); removed with the markers.
FAILOVER_TOKEN = "/root/.puppetlabs/pe_dr_failover_token"  # noqa: S105 (a path)
# Writes the stream must have acknowledged before the halt starts (a halt under way from the
# first write would measure nothing in flight).
WRITES_BEFORE_HALT = 2


def remove_markers(lab: Lab, *, replica_too: bool = True) -> list[str]:
    """Remove every drill-owned marker object (any run's, any attempt's); what it removed."""
    removed: list[str] = []
    primary = lab.spec.primary.name
    with lab.pe(primary) as pe:
        for store in stores.STORES:
            removed += store.remove(lab, pe)
    if replica_too:
        host = lab.host(lab.spec.replica.name)
        if host.exists(FAILOVER_TOKEN, root=True):
            host.run(["rm", "-f", FAILOVER_TOKEN], root=True)
            removed.append(f"the failover token on {lab.spec.replica.name}")
    return removed


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
        at = Writing(lab, pe, marker, agent, name, description, poll_interval)
        # a slow write first (an agent run), so that the others' delays are not inflated by it
        for store in sorted(stores.STORES, key=lambda s: not s.first):
            written[store.name] = store.write(at)
        token = pe.token or ""
    # the second path of the checks on the replica, should the replica accept tokens
    lab.host(replica).put(FAILOVER_TOKEN, token.encode(), mode=0o600, owner="root", group="root")

    reached: dict[str, float] = {}
    first = Markers(marker, agent, tuple(written.values()))
    wanted = [s for s in stores.STORES if s.watched and not written[s.name].unwritten]
    deadline = time.monotonic() + budget_seconds
    pace = Pacer(poll_interval, deadline, what=f"{replica} to serve the markers")
    with lab.pe_on(replica) as on_replica:
        while True:
            for store in [s for s in wanted if s.name not in reached]:
                if _serves(store, on_replica, written[store.name], first):
                    reached[store.name] = time.time()
            if len(reached) == len(wanted) or not pace.wait():
                break
    seen = []
    for store in stores.STORES:
        mark = written[store.name]
        latency = None
        if store.name in reached and mark.written_at is not None:
            latency = round(max(0.0, reached[store.name] - mark.written_at), 3)
        seen.append(
            StoreMarker(store.name, mark.ref, mark.written_at, latency, unwritten=mark.unwritten)
        )
    return Markers(marker, agent, tuple(seen), removed)


def _serves(store: Store, pe: PEClient, mark: StoreMarker, markers: Markers) -> bool:
    """Whether the server `pe` talks to serves the store's first marker (False: cannot tell)."""
    try:
        return store.serves(pe, mark, markers)
    except PeDrError:
        return False


class MarkerStream:
    """Writes `marker #1, #2, …` into every streamed store (the classifier group, the RBAC role)
    through the primary, one `interval` apart, on a thread of its own, until stopped; keeps each
    acknowledgement."""

    def __init__(self, lab: Lab, markers: Markers, interval: float) -> None:
        self.markers = markers
        self.interval = interval
        self.writes: dict[str, list[tuple[int, float]]] = {s: [] for s in stores.streamed()}
        self.refused: dict[str, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._acked = threading.Condition()
        self._pe = lab.pe(lab.spec.primary.name)
        # a write the halt cuts short must not hold the stream for the client's 30 s
        self._pe._http.timeout = httpx.Timeout(max(2.0, interval * 5))
        self._writers: dict[str, Callable[[int], object]] = {
            s.name: s.streamer(self._pe, markers) for s in stores.STORES if s.streamed
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
