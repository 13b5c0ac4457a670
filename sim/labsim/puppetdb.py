"""PuppetDB on the primary and on the replica, as PE runs the pair.

* Writes are broadcast: every Puppet Server sends each command (facts, report) to every PuppetDB
  it knows, and a primary with an enabled replica knows both (`command_broadcast`, PE's default
  since 2016.5: puppetdb documentation/puppetdb_connection.markdown; real-world-findings §4.1
  row 4). A PuppetDB that is down misses the command.
* Sync repairs what one side missed: each PuppetDB pulls from the other at an interval
  (pe-puppetdb-extensions, puppetdb documentation/ha.markdown; PE's `sync_interval_minutes`,
  2 by default), so reports and newer factsets missing on one side arrive at the next sync. The
  age of the last successful sync is what PE prints ("Info: Last sync successfully completed
  25 seconds ago (at 2020-04-07T22:16:20.231Z)": peadm documentation/status.md, real output) and
  what PuppetDB's metric `puppetlabs.puppetdb.ha:name=seconds-since-last-successful-sync` holds
  (documentation/ha.markdown, "Metrics").
* Faults: `replication:puppetdb=broken` (sync never succeeds; broadcast still reaches both),
  `replication:puppetdb=S` (sync every S real seconds instead of the scaled 2 minutes).

Sync runs lazily, on a grid of the interval, whenever the lab looks at a PuppetDB (every API
request, every halt and boot), so a sync happens only while both servers serve.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labsim.lab import VM, Lab

SYNC_INTERVAL = 120.0  # modelled seconds (PE's sync_interval_minutes = 2)


@dataclass
class Store:
    """What one PuppetDB holds."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # certname -> factset
    last_sync: float | None = None  # epoch of the last successful sync
    last_failed: float | None = None


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass
class PuppetDBs:
    stores: dict[str, Store] = field(default_factory=dict)
    next_sync: float = 0.0

    # -- which PuppetDBs exist and answer ----------------------------------------------------
    def servers(self, lab: Lab) -> list[str]:
        """PE's PuppetDBs: the primary's, and the replica's once it is enabled."""
        pe = lab.pe
        if pe is None:
            return []
        names = [pe.primary]
        if pe.replica and pe.replica_enabled:
            names.append(pe.replica)
        return names

    def up(self, lab: Lab, name: str) -> bool:
        vm = lab.vms.get(name)
        return vm is not None and vm.serving and vm.installed

    def store(self, name: str) -> Store:
        return self.stores.setdefault(name, Store())

    # -- writes: broadcast -------------------------------------------------------------------
    def write_facts(self, lab: Lab, certname: str, factset: dict[str, Any]) -> list[str]:
        """Replace a node's facts on every PuppetDB that answers; the ones it reached."""
        self.tick(lab)
        reached = [s for s in self.servers(lab) if self.up(lab, s)]
        for name in reached:
            self.store(name).facts[certname] = dict(factset)
        return reached

    def write_report(self, lab: Lab, report: dict[str, Any]) -> list[str]:
        self.tick(lab)
        reached = [s for s in self.servers(lab) if self.up(lab, s)]
        for name in reached:
            self.store(name).reports.append(dict(report))
        return reached

    # -- sync ----------------------------------------------------------------------------------
    def interval(self, lab: Lab) -> float:
        given = lab.faults.store_lag("puppetdb")
        return given if given is not None else max(SYNC_INTERVAL * lab.scale, 0.05)

    def broken(self, lab: Lab) -> bool:
        return lab.faults.has_store("puppetdb", "broken")

    def enabled(self, lab: Lab) -> None:
        """`enable replica`: the replica's PuppetDB starts from a full sync of the primary's."""
        pe = lab.pe
        assert pe is not None and pe.replica
        source, target = self.store(pe.primary), self.store(pe.replica)
        self._pull(target, source)
        now = time.time()
        if not self.broken(lab):
            target.last_sync = source.last_sync = now
        self.next_sync = now + self.interval(lab)

    def tick(self, lab: Lab) -> None:
        """Run the syncs that fell due since the last look, if both PuppetDBs answer now."""
        names = self.servers(lab)
        now = time.time()
        if len(names) < 2 or now < self.next_sync:
            return
        step = self.interval(lab)
        due = self.next_sync + step * int((now - self.next_sync) // step)
        self.next_sync = due + step
        a, b = (self.store(n) for n in names)
        if not all(self.up(lab, n) for n in names) or self.broken(lab):
            for name in names:
                if self.up(lab, name):
                    self.store(name).last_failed = due
            return
        self._pull(a, b)
        self._pull(b, a)
        a.last_sync = b.last_sync = due

    @staticmethod
    def _pull(target: Store, source: Store) -> None:
        have = {r.get("hash") for r in target.reports}
        target.reports += [dict(r) for r in source.reports if r.get("hash") not in have]
        target.reports.sort(key=lambda r: str(r.get("receive_time", "")))
        for certname, factset in source.facts.items():
            mine = target.facts.get(certname)
            if mine is None or str(mine.get("timestamp", "")) < str(factset.get("timestamp", "")):
                target.facts[certname] = dict(factset)

    # -- what a PuppetDB reports about itself -------------------------------------------------
    def sync_age(self, lab: Lab, name: str) -> float | None:
        """`seconds-since-last-successful-sync` of PuppetDB `name` (None: never synced)."""
        self.tick(lab)
        last = self.store(name).last_sync
        return None if last is None else max(0.0, time.time() - last)

    def status(self, lab: Lab, vm: VM) -> tuple[str, dict[str, Any], list[dict[str, str]]]:
        """`puppetdb-status`: its state, its `status` (peadm spec/fixtures/infrastatus.json:
        maintenance_mode?, queue_depth, read/write_db_up?, rbac_status, sync_status) and its
        alerts (the sync's age as an info alert). A PuppetDB whose RBAC service (the primary's)
        does not answer reports `state: unknown` and `rbac_status: error` (pe-puppetdb-extensions
        rbac_test.clj `check-rbac-down`; real-world-findings §4.1 row 1)."""
        pe = lab.pe
        assert pe is not None
        rbac_up = self.up(lab, pe.primary)
        status: dict[str, Any] = {
            "maintenance_mode?": False,
            "queue_depth": 0,
            "read_db_up?": True,
            "write_db_up?": True,
            "rbac_status": "running" if rbac_up else "error",
            "sync_status": {"state": "idle"},
        }
        alerts: list[dict[str, str]] = []
        if len(self.servers(lab)) == 2 and vm.name in self.servers(lab):
            age = self.sync_age(lab, vm.name)
            last = self.store(vm.name).last_sync
            if age is not None and last is not None:
                alerts.append(
                    {
                        "severity": "info",
                        "message": f"Last sync successfully completed {int(age)} seconds ago "
                        f"(at {_iso(last)})",
                    }
                )
        return ("running" if rbac_up else "unknown"), status, alerts

    def metric(self, lab: Lab, vm: VM, name: str) -> int | None:
        """A `puppetlabs.puppetdb.ha` metric (documentation/ha.markdown, "Metrics")."""
        if name == "seconds-since-last-successful-sync":
            age = self.sync_age(lab, vm.name)
            return None if age is None else int(age)
        return None
