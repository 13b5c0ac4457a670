"""labsim's per-store replication model without a lab (ms): lag, broken, lost in flight."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from labsim import replication
from labsim.faults import FaultTable, parse_fault
from labsim.state import PEState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(replication.time, "time", c)
    return c


def lab(*faults: str) -> Any:
    pe = PEState.install("primary.vm", "pw")
    pe.replica, pe.replica_enabled = "replica.vm", True
    table = FaultTable()
    for f in faults:
        table.add(parse_fault(f))
    primary = SimpleNamespace(serving=True)
    return SimpleNamespace(pe=pe, faults=table, scale=0.001, vms={"primary.vm": primary})


def names(view: dict[str, Any]) -> list[str]:
    return [g["name"] for g in view["groups"]]


def write(the_lab: Any, name: str) -> None:
    the_lab.pe.groups.append({**the_lab.pe.groups[0], "name": name, "id": name})


def written_a_second_ago(clock: Clock, *faults: str) -> tuple[Any, replication.Replication]:
    """A lab with `faults` whose primary wrote a group "marker" one second ago."""
    the_lab, repl = lab(*faults), replication.Replication()
    repl.record(the_lab)
    write(the_lab, "marker")
    repl.record(the_lab)
    clock.now += 1
    return the_lab, repl


def test_a_write_reaches_the_replica_after_the_stores_lag(clock: Clock) -> None:
    the_lab, repl = written_a_second_ago(clock, "replication:classifier=5")
    assert "marker" not in names(repl.view(the_lab, "classifier"))
    clock.now += 5
    assert "marker" in names(repl.view(the_lab, "classifier"))


def test_a_write_in_flight_when_the_primary_goes_down_is_lost(clock: Clock) -> None:
    the_lab, repl = written_a_second_ago(clock, "replication:classifier=5")
    repl.mark_down()
    the_lab.vms["primary.vm"].serving = False
    clock.now += 60
    assert "marker" not in names(repl.view(the_lab, "classifier"))


def test_a_broken_store_keeps_what_it_had_and_the_others_replicate(clock: Clock) -> None:
    the_lab, repl = lab(), replication.Replication()
    repl.record(the_lab)
    the_lab.faults.add(parse_fault("replication:classifier=broken"))
    write(the_lab, "marker")
    the_lab.pe.custom_roles["9"] = {"id": 9, "display_name": "r", "description": "marker"}
    repl.record(the_lab)  # as the API does after every request
    clock.now += 60
    assert "marker" not in names(repl.view(the_lab, "classifier"))
    assert "9" in repl.view(the_lab, "rbac")["roles"]
    assert repl.status(the_lab, "classifier") == "inactive"
    assert repl.status(the_lab, "rbac") == "running"
