"""One drill per lab: a strict Prefect global concurrency limit named after the lab.

A root flow run holds the limit `pe-dr-lab-<lab name>` (one slot, a lease renewed while held)
while it touches the lab; a second run on the same lab waits for it and gives up, in one
sentence, after the lock wait (`PE_DR_LAB_LOCK_WAIT_SECONDS`, default 1800 s).

Prefect's lease records only a holder's id, and a local (ephemeral) server forgets its leases
when it stops while the slot stays taken. So the holder also records itself in the Prefect
Variable `pe-dr-lab-<lab name>-holder` (visible in the UI): flow run id and name, attempt, process
id, host, since when, and the lease. A waiter says within seconds who holds the lab and since when
(then at most every 30 s), and frees a holder that is provably dead: its flow run is in a final
state, it is an earlier attempt of the waiter's own run, or its process on this host is gone. A
live holder is waited for.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from pe_dr import interrupts, processes
from pe_dr.errors import ConfigError, PeDrError
from pe_dr.lab.spec import LabSpec
from pe_dr.polling import Progress
from pe_dr.preflight import Outcome
from pe_dr.settings import env_name, settings

LOCK_WAIT_ENV = env_name("lab_lock_wait_seconds")
# Renewed while held; on a Prefect server a killed drill's slot frees itself this long after.
LEASE_SECONDS = 60.0
RETRY_SECONDS = 2.0  # between two attempts to take a busy lab
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

Say = Callable[[str], None]


class LabBusy(PeDrError):
    """Another drill held the lab for longer than this run was willing to wait."""


def limit_name(spec: LabSpec) -> str:
    return f"pe-dr-lab-{spec.name}"


def holder_variable(spec: LabSpec) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", f"{limit_name(spec)}-holder".lower())[:255]


def lock_wait_seconds() -> float:
    return settings().lab_lock_wait_seconds


def ensure_lab_limit(spec: LabSpec) -> bool:
    """Create the lab's limit (1 slot) unless it exists; True when it was created now.

    An existing limit is left as it is (an operator may have changed it on purpose).
    """
    name = limit_name(spec)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
            )
        except ObjectAlreadyExists:  # another drill created it a moment ago
            return False
    return True


# --- who holds the lab -----------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    flow_run_id: str
    flow_run_name: str
    attempt: int
    pid: int
    host: str
    since: str
    lease_id: str | None = None
    pid_started: str | None = None

    def describe(self) -> str:
        return f"flow run {self.flow_run_id} ({self.flow_run_name}) since {self.since}"

    @classmethod
    def from_value(cls, value: Any) -> Holder | None:
        """The record read back from its Variable; None when it is not one of ours."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                flow_run_id=str(value["flow_run_id"]),
                flow_run_name=str(value.get("flow_run_name") or "?"),
                attempt=int(value.get("attempt") or 1),
                pid=int(value["pid"]),
                host=str(value.get("host") or ""),
                since=str(value.get("since") or "?"),
                lease_id=str(value["lease_id"]) if value.get("lease_id") else None,
                pid_started=str(value["pid_started"]) if value.get("pid_started") else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


def current_holder(lease_id: UUID | None) -> Holder:
    """This process, as the holder of the lab (the current root flow run)."""
    from prefect.runtime import flow_run

    return Holder(
        flow_run_id=str(flow_run.id),
        flow_run_name=str(flow_run.name),
        attempt=int(flow_run.run_count or 1),
        pid=os.getpid(),
        host=socket.gethostname(),
        since=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        lease_id=str(lease_id) if lease_id else None,
        pid_started=processes.started(os.getpid()),
    )


def read_holder(client: SyncPrefectClient, spec: LabSpec) -> Holder | None:
    try:
        variable = client.read_variable_by_name(holder_variable(spec))
    except ObjectNotFound:
        return None
    return Holder.from_value(variable.value) if variable is not None else None


def _write_holder(client: SyncPrefectClient, spec: LabSpec, holder: Holder) -> None:
    name, value = holder_variable(spec), asdict(holder)
    try:
        client.create_variable(VariableCreate(name=name, value=value))
    except ObjectAlreadyExists:
        client.update_variable(VariableUpdate(name=name, value=value))


def _clear_holder(client: SyncPrefectClient, spec: LabSpec, lease_id: str | None) -> None:
    held = read_holder(client, spec)
    if held is not None and held.lease_id == lease_id:
        with contextlib.suppress(ObjectNotFound):
            client.delete_variable_by_name(holder_variable(spec))


def dead_because(client: SyncPrefectClient, holder: Holder, me: Holder | None) -> str | None:
    """Why `holder` provably no longer runs (a clause), or None when it may still run."""
    if me is not None and holder.flow_run_id == me.flow_run_id and holder.attempt < me.attempt:
        return (
            f"it was attempt {holder.attempt} of this same run, which is now attempt {me.attempt}"
        )
    try:
        run = client.read_flow_run(UUID(holder.flow_run_id))
    except (ObjectNotFound, ValueError):
        return "its flow run no longer exists"
    state = run.state.type.value if run.state else None
    if state in FINAL:
        return f"its flow run is {run.state.name if run.state else state}"
    if holder.host == socket.gethostname() and not processes.alive(holder.pid, holder.pid_started):
        return f"its process {holder.pid} on this host is gone"
    return None


def _free(client: SyncPrefectClient, spec: LabSpec, holder: Holder) -> None:
    """Give back the slot of a dead holder: through its lease while the server knows it (the
    lease is revoked too, so it cannot expire later and free a slot twice), else by hand."""
    if holder.lease_id:
        try:
            client.renew_concurrency_lease(UUID(holder.lease_id), LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (404, 410):
                raise
        else:
            client.release_concurrency_slots_with_lease(UUID(holder.lease_id))
            _clear_holder(client, spec, holder.lease_id)
            return
    # The server forgot the lease (a local server forgets them when it stops) or another waiter
    # freed it a moment ago and took the slot: a taker records itself within milliseconds, so a
    # record still naming the dead holder a moment later means the slot is the dead one's.
    time.sleep(RETRY_SECONDS)
    if read_holder(client, spec) != holder:
        return
    limit = client.read_global_concurrency_limit_by_name(limit_name(spec))
    if limit.active_slots >= limit.limit:
        client.update_global_concurrency_limit(
            limit_name(spec), GlobalConcurrencyLimitUpdate(active_slots=limit.active_slots - 1)
        )
    _clear_holder(client, spec, holder.lease_id)


def _try_take(client: SyncPrefectClient, spec: LabSpec, me: Holder) -> UUID | None:
    """One attempt to take the lab's slot: the lease id, or None while it is busy."""
    try:
        response = client.increment_concurrency_slots_with_lease(
            [limit_name(spec)],
            1,
            "concurrency",
            LEASE_SECONDS,
            holder=ConcurrencyLeaseHolder(type="flow_run", id=UUID(me.flow_run_id)),
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 423:
            return None
        raise
    body = response.json()
    if not body.get("limits"):
        raise ConfigError(
            f"the concurrency limit {limit_name(spec)} is inactive, so it would not keep two "
            "drills off the lab: activate it in the UI (Concurrency) or delete it"
        )
    return UUID(str(body["lease_id"]))


def _busy_line(spec: LabSpec, holder: Holder | None, wait: float) -> Callable[[float], str]:
    who = holder.describe() if holder else "a run that left no holder record"
    return lambda elapsed: f"waiting for lab {spec.name}: held by {who}; {elapsed:.0f}/{wait:.0f} s"


def _renew(lease_id: UUID, stop: threading.Event, say: Say) -> None:
    with get_client(sync_client=True) as client:
        while not stop.wait(LEASE_SECONDS / 3):
            try:
                client.renew_concurrency_lease(lease_id, LEASE_SECONDS)
            except Exception as exc:  # the lease may still be alive: say so and keep trying
                say(f"could not renew the lab lock's lease: {exc}")


@contextlib.contextmanager
def holding_lab(spec: LabSpec, note: Say = print) -> Iterator[None]:
    """Hold the lab's slot for the block; wait at most the lock wait, then raise LabBusy.

    While it waits, who holds the lab goes to pe_dr.polling's progress sinks (at once, then at
    most every 30 s); `note` gets what belongs in the journal (a dead holder freed)."""
    wait = lock_wait_seconds()
    ensure_lab_limit(spec)
    me = current_holder(None)
    started = time.monotonic()
    progress: Progress | None = None
    seen: Holder | None = None
    with get_client(sync_client=True) as client:
        while True:
            lease_id = _try_take(client, spec, me)
            if lease_id is not None:
                break
            holder = read_holder(client, spec)
            dead = dead_because(client, holder, me) if holder is not None else None
            if holder is not None and dead is not None:
                _free(client, spec, holder)
                note(f"lab {spec.name} was held by {holder.describe()}, but {dead}: freed it")
                continue
            if progress is None or holder != seen:
                progress = Progress(_busy_line(spec, holder, wait), started, first_after=0)
                seen = holder
            progress.tick()
            left = started + wait - time.monotonic()
            if left <= 0:
                who = holder.describe() if holder else "a run that left no holder record"
                raise LabBusy(
                    f"another drill holds lab {spec.name}; gave up after {wait:g} s "
                    f"(limit {limit_name(spec)}, held by {who})"
                )
            time.sleep(min(RETRY_SECONDS, left))
        mine = current_holder(lease_id)
        _write_holder(client, spec, mine)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(lease_id, stop, note), name="pe-dr-lab-lease", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        with interrupts.shielded(), get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)
            with contextlib.suppress(Exception):
                _clear_holder(client, spec, mine.lease_id)
        renewer.join(timeout=5)


def lock_outlook(spec: LabSpec) -> Outcome:
    """Pre-flight's view of the lock: free, held by a live run (we will wait), held by a dead
    one (it will be freed); a limit that would never admit a drill is a problem."""
    out = Outcome()
    try:
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(limit_name(spec))
            except ObjectNotFound:
                return out  # made when the drill takes the lab
            if not limit.active:
                out.problems.append(
                    f"the concurrency limit {limit.name} is inactive, so it would not keep two "
                    "drills off the lab: activate it in the UI (Concurrency) or delete it"
                )
                return out
            if limit.limit < 1:
                out.problems.append(
                    f"the concurrency limit {limit.name} has {limit.limit} slots, so no drill "
                    "could ever take the lab: set it to 1"
                )
                return out
            if limit.active_slots < limit.limit:
                return out
            holder = read_holder(client, spec)
            me = current_holder(None)
            if holder is None:
                out.notes.append(f"lab {spec.name} is held by a run that left no holder record")
                return out
            dead = dead_because(client, holder, me)
            if dead:
                out.notes.append(f"lab {spec.name} is held by {holder.describe()}, but {dead}")
            else:
                out.notes.append(f"lab {spec.name} is held by {holder.describe()}: waiting")
    except (PeDrError, httpx.HTTPError) as exc:
        out.notes.append(f"could not read the lab lock: {exc}")
    return out
