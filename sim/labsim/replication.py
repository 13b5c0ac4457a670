"""Replication of PE's stores to the replica, one store at a time, each with its own lag and faults.

What PE replicates, and how (PE HA/DR overview, PDF-2021.7.1 p.268-269, reference §4.1):

* `classifier`, `rbac` (and activity, orchestrator): PostgreSQL replication of their databases to
  the replica, read-only there; broken replication is reported by the primary's services as
  `status.replication.status: inactive` with an error alert "Database replication for X is
  inactive" (peadm spec/fixtures/infrastatus.json, real output).
* PuppetDB is not replicated here: Puppet Server broadcasts every write to both PuppetDBs and
  PuppetDB's own sync repairs what one missed (labsim/puppetdb.py).
* code: file sync (modelled in lab.sync_replica, faults `replication:broken|lag=N`).

The replica serves a store as the primary held it `lag` seconds ago, and never anything the primary
wrote after it went down: what was in flight then is lost, which is what a drill's RPO measures.
A broken store keeps serving what it had when it broke.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labsim.lab import Lab

STORES = ("classifier", "rbac")
# About PE's own pace in modelled seconds: database replication streams (sub-second).
DEFAULT_LAG = {"classifier": 0.5, "rbac": 0.5}


def _content(lab: Lab, store: str) -> dict[str, Any]:
    pe = lab.pe
    assert pe is not None
    if store == "classifier":
        return {"groups": pe.groups}
    return {"users": pe.users, "role_members": pe.role_members, "roles": pe.custom_roles}


@dataclass
class Replication:
    """Each store's history of the primary's content (time, JSON), and what reached the replica."""

    history: dict[str, list[tuple[float, str]]] = field(
        default_factory=lambda: {s: [] for s in STORES}
    )
    primary_down_at: float | None = None

    def lag(self, lab: Lab, store: str) -> float:
        given = lab.faults.store_lag(store)
        return given if given is not None else max(DEFAULT_LAG[store] * lab.scale, 0.05)

    def record(self, lab: Lab) -> None:
        """What the primary holds now, for each store still replicating (called before and after
        every API request, so a write is stamped with its own time)."""
        pe = lab.pe
        if pe is None or not pe.replica or not pe.replica_enabled or pe.promoted:
            return
        primary = lab.vms[pe.primary]
        if not primary.serving:
            if self.primary_down_at is None:
                self.primary_down_at = time.time()
            return
        self.primary_down_at = None
        now = time.time()
        for store in STORES:
            if lab.faults.has_store(store, "broken"):
                continue
            text = json.dumps(_content(lab, store), sort_keys=True, default=str)
            entries = self.history[store]
            if not entries or entries[-1][1] != text:
                entries.append((now, text))
            # keep the newest entry old enough to have reached the replica, and what follows it
            horizon = now - self.lag(lab, store)
            while len(entries) > 1 and entries[1][0] <= horizon:
                entries.pop(0)

    def mark_down(self) -> None:
        """The primary stops now: nothing it holds from now on reaches the replica."""
        self.primary_down_at = time.time()

    def view(self, lab: Lab, store: str) -> dict[str, Any]:
        """The replica's copy of `store`: the newest content that reached it."""
        self.record(lab)
        now = time.time()
        cut = now - self.lag(lab, store)
        entries = self.history[store]
        if self.primary_down_at is not None:
            # in flight when the primary went down: lost
            reached = [e for e in entries if e[0] + self.lag(lab, store) <= self.primary_down_at]
        else:
            reached = [e for e in entries if e[0] <= cut]
        if reached:
            return dict(json.loads(reached[-1][1]))
        if entries:  # the initial sync of `enable replica` is modelled as done at once
            return dict(json.loads(entries[0][1]))
        return copy.deepcopy(_content(lab, store))

    def status(self, lab: Lab, store: str) -> str:
        """`running` or `inactive`, as PE's status API reports database replication."""
        return "inactive" if lab.faults.has_store(store, "broken") else "running"
