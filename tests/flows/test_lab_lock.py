"""The lab lock never hangs a drill silently: a waiter names the holder at once and frees one
that is provably dead; a live holder is waited for. Only the Prefect test server is needed: the
lock is named after the lab, and these labs exist only by name."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.states import Crashed, Running

from flows import lab_lock
from pe_dr import polling, processes
from pe_dr.lab.spec import LabSpec

pytestmark = pytest.mark.slow


@flow(name="lock-taker", persist_result=False)
def take_lab(spec: LabSpec) -> list[str]:
    notes: list[str] = []
    with lab_lock.holding_lab(spec, note=notes.append):
        notes.append("held")
    return notes


@flow(name="lock-holder-stand-in", persist_result=False)
def stand_in() -> None:
    """Only a flow for the holders' runs to belong to."""


@pytest.fixture
def spec(prefect_server: None) -> LabSpec:
    return LabSpec(name=f"lock-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def client(prefect_server: None) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as c:
        yield c


@pytest.fixture
def lines() -> Iterator[list[str]]:
    said: list[str] = []
    polling.add_progress_sink(said.append)
    yield said
    polling.remove_progress_sink(said.append)


def _holder_run(client: SyncPrefectClient, state: Any) -> Any:
    return client.create_flow_run(stand_in, state=state)


def _take_for(
    client: SyncPrefectClient, spec: LabSpec, run: Any, *, pid: int, with_lease: bool = True
) -> lab_lock.Holder:
    """The lab held by `run` (process `pid` on this host), as holding_lab leaves it."""
    lab_lock.ensure_lab_limit(spec)
    lease: str | None = None
    if with_lease:
        response = client.increment_concurrency_slots_with_lease(
            [lab_lock.limit_name(spec)],
            1,
            "concurrency",
            lab_lock.LEASE_SECONDS,
            holder=ConcurrencyLeaseHolder(type="flow_run", id=run.id),
        )
        lease = str(response.json()["lease_id"])
    else:  # a slot whose lease the server no longer knows (a local server restarted)
        client.update_global_concurrency_limit(
            lab_lock.limit_name(spec), GlobalConcurrencyLimitUpdate(active_slots=1)
        )
        lease = str(uuid.uuid4())
    holder = lab_lock.Holder(
        flow_run_id=str(run.id),
        flow_run_name=run.name,
        attempt=1,
        pid=pid,
        host=socket.gethostname(),
        since="2026-12-01T03:00:00Z",
        lease_id=lease,
        pid_started=processes.started(pid),
    )
    lab_lock._write_holder(client, spec, holder)
    return holder


def _active(client: SyncPrefectClient, spec: LabSpec) -> int:
    return int(client.read_global_concurrency_limit_by_name(lab_lock.limit_name(spec)).active_slots)


def test_a_holder_whose_run_crashed_is_freed_and_the_drill_goes_on(
    client: SyncPrefectClient, spec: LabSpec
) -> None:
    dead = _holder_run(client, Crashed())
    holder = _take_for(client, spec, dead, pid=os.getpid())
    assert lab_lock.lock_outlook(spec).notes == [
        f"lab {spec.name} is held by {holder.describe()}, but its flow run is Crashed"
    ]
    notes = take_lab(spec)
    assert notes == [
        f"lab {spec.name} was held by {holder.describe()}, but its flow run is Crashed: freed it",
        "held",
    ]
    assert _active(client, spec) == 0, "the dead holder's slot and ours are both given back"
    assert lab_lock.read_holder(client, spec) is None


def test_a_holder_whose_process_is_gone_is_freed_even_without_a_known_lease(
    client: SyncPrefectClient, spec: LabSpec
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    running = _holder_run(client, Running())  # its state says Running: its process says not
    holder = _take_for(client, spec, running, pid=gone.pid, with_lease=False)
    notes = take_lab(spec)
    assert notes[0] == (
        f"lab {spec.name} was held by {holder.describe()}, but its process {gone.pid} on this "
        "host is gone: freed it"
    )
    assert notes[1:] == ["held"]
    assert _active(client, spec) == 0


def test_a_live_holder_is_named_at_once_and_waited_for(
    client: SyncPrefectClient,
    spec: LabSpec,
    lines: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(lab_lock.LOCK_WAIT_ENV, "3")
    live = _holder_run(client, Running())
    holder = _take_for(client, spec, live, pid=os.getpid())  # this very process: alive
    assert lab_lock.lock_outlook(spec).notes == [
        f"lab {spec.name} is held by {holder.describe()}: waiting"
    ]
    state = take_lab(spec, return_state=True)
    assert state.is_failed()
    assert f"another drill holds lab {spec.name}; gave up after 3 s" in str(state.message)
    assert holder.describe() in str(state.message)
    waiting = [line for line in lines if line.startswith(f"waiting for lab {spec.name}:")]
    # said during a 3-second wait, so well within the 10 s promised
    assert waiting and waiting[0].startswith(
        f"waiting for lab {spec.name}: held by flow run {live.id} ({live.name}) since "
        "2026-12-01T03:00:00Z; "
    ), lines
    assert _active(client, spec) == 1, "a live holder keeps the lab"
    assert lab_lock.read_holder(client, spec) == holder


def test_an_earlier_attempt_of_the_same_run_is_dead(client: SyncPrefectClient) -> None:
    run = _holder_run(client, Running())
    earlier = lab_lock.Holder(str(run.id), run.name, 1, os.getpid(), socket.gethostname(), "t")
    me = replace(earlier, attempt=2)
    assert lab_lock.dead_because(client, earlier, me) == (
        "it was attempt 1 of this same run, which is now attempt 2"
    )
    assert lab_lock.dead_because(client, earlier, earlier) is None, "alive: same attempt, my pid"


def test_an_inactive_or_empty_limit_is_a_preflight_problem(
    client: SyncPrefectClient, spec: LabSpec
) -> None:
    lab_lock.ensure_lab_limit(spec)
    name = lab_lock.limit_name(spec)
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=0))
    assert lab_lock.lock_outlook(spec).problems == [
        f"the concurrency limit {name} has 0 slots, so no drill could ever take the lab: set it "
        "to 1"
    ]
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=False))
    assert "is inactive" in lab_lock.lock_outlook(spec).problems[0]
