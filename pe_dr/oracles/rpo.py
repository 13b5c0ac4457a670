"""What the replica serves while the primary is down, and what a lost primary would lose (RPO).

Checked against the replica's own APIs during the outage (reference §3, §4.2: a replica serves
classification through the classifier API and PuppetDB queries, and refuses classification edits
and code deploys). Per store, RPO is how long the marker written just before the halt took to
reach the replica: writes younger than that are what the replica would not have if the primary
died. A store whose marker never reached the replica serves stale data and fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pe_dr.clients.pe_api import PUPPETDB_PORT, RBAC_PORT, PEClient
from pe_dr.errors import ApiError, PeDrError
from pe_dr.lab.live import Lab
from pe_dr.oracles.checks import CheckResult
from pe_dr.steps.markers import FACT, FAILOVER_TOKEN, STORES, Markers, look

NAME = "replica_serves"


@dataclass(frozen=True)
class StoreSeen:
    """One store as the drill saw it on the replica during the outage."""

    store: str
    answered: bool
    has_marker: bool
    written_before_halt: float | None  # seconds from the write's acknowledgement to the halt
    reached_after: float | None  # seconds from the write to the replica serving it (pre-halt)
    replication: dict[str, Any] | None = None  # what PE's status API reports of it
    detail: str = ""
    unwritten: str = ""  # no marker could be written: served data is not judged

    @property
    def rpo_seconds(self) -> float | None:
        return self.reached_after if self.answered and self.has_marker else None

    @property
    def rpo_at_least(self) -> float | None:
        """A marker that never reached the replica: at least what was written since is lost."""
        return None if self.has_marker or self.unwritten else self.written_before_halt

    @property
    def judged(self) -> bool:
        return not self.unwritten

    def to_json(self) -> dict[str, object]:
        return {
            "answered": self.answered,
            "marker_on_replica": self.has_marker,
            "written_before_halt_s": self.written_before_halt,
            "reached_replica_after_s": self.reached_after,
            "rpo_seconds": self.rpo_seconds,
            "rpo_at_least_s": self.rpo_at_least,
            "replication_reported": self.replication,
            "seen": self.detail,
            "not_measured": self.unwritten or None,
        }


def judge(
    stores: list[StoreSeen], read_only: dict[str, str], *, budget_seconds: float, replica: str
) -> CheckResult:
    """One verdict over the stores and the read-only probes. `read_only` maps a probe to
    `refused …` or what happened instead."""
    evidence: dict[str, object] = {
        "stores": {s.store: s.to_json() for s in stores},
        "read_only": dict(read_only),
    }
    rpos = [s.rpo_seconds for s in stores if s.rpo_seconds is not None]
    # unknown when a store lost its marker: its RPO is only known from below (rpo_at_least_s)
    lost = any(s.judged and not (s.answered and s.has_marker) for s in stores)
    worst = max(rpos) if rpos and not lost else None
    problems = []
    for s in stores:
        if not s.answered:
            problems.append(f"{s.store} on {replica} did not answer ({s.detail})")
        elif not s.has_marker and s.judged:
            when = (
                f" written {s.written_before_halt:.1f} s before the halt"
                if s.written_before_halt is not None
                else ""
            )
            told = f"; PE reports its replication as {s.replication}" if s.replication else ""
            problems.append(
                f"{s.store} on {replica} serves stale data: the marker{when} never reached it{told}"
            )
    for probe, outcome in read_only.items():
        if not outcome.startswith("refused"):
            problems.append(f"{probe} on {replica} was not refused ({outcome})")
    if worst is not None and worst > budget_seconds:
        slowest = max(stores, key=lambda s: s.rpo_seconds or -1.0)
        problems.append(
            f"RPO {worst:.1f} s ({slowest.store}) is over the budget of {budget_seconds:.0f} s"
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return CheckResult(NAME, False, problems[0] + more, evidence, worst)
    per = ", ".join(f"{s.store} {s.rpo_seconds:.1f} s" for s in stores if s.rpo_seconds is not None)
    skipped = [f"{s.store} not measured: {s.unwritten}" for s in stores if not s.judged]
    also = f"; {'; '.join(skipped)}" if skipped else ""
    return CheckResult(
        NAME,
        True,
        f"{replica} serves every store's marker (RPO {per}); classification edit and code "
        f"deploy refused{also}",
        evidence,
        worst,
    )


def _replication_reported(pe: PEClient) -> dict[str, dict[str, Any] | None]:
    """Database replication of the classifier and RBAC (`status.replication` of GET
    /status/v1/services on 4433) and PuppetDB's sync (`status.sync_status` on 8081), as the
    replica reports them (PDF-2021.7.1 p.436-440; peadm spec/fixtures/infrastatus.json). None
    where the replica does not say."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(STORES)
    try:
        services = pe.services(RBAC_PORT)
    except PeDrError:
        services = {}
    for store, name in (("classifier", "classifier-service"), ("rbac", "rbac-service")):
        status = (services.get(name) or {}).get("status") or {}
        found[store] = status.get("replication") if isinstance(status, dict) else None
    try:
        pdb = pe.services(PUPPETDB_PORT)
    except PeDrError:
        pdb = {}
    status = (pdb.get("puppetdb-service") or pdb.get("puppetdb-status") or {}).get("status") or {}
    found["puppetdb"] = status.get("sync_status") if isinstance(status, dict) else None
    return found


def _refused(action: Any) -> str:
    """`refused (…)` when `action()` failed as PE refuses on a replica, else what it answered."""
    try:
        answer = action()
    except ApiError as exc:
        return f"refused ({exc.status})"
    except PeDrError as exc:  # nothing serves it there: refused as well (no Code Manager)
        return f"refused ({exc})"
    return f"accepted: {answer!r}"[:200]


def check_replica_serves(
    lab: Lab, *, markers: Markers, halted_at: float, budget_seconds: float
) -> CheckResult:
    """During the outage: the replica's classifier returns the classification data with the
    marker group (GET /classifier-api/v1/groups), RBAC the marker role (GET
    /rbac-api/v1/roles), PuppetDB the agent's marker fact and the report of the run that sent it
    (GET /pdb/query/v4/facts, /pdb/query/v4/reports), its live code the primary's last commit;
    a classification edit (POST /classifier-api/v1/groups/<id>) and a code deploy (POST
    /code-manager/v1/deploys on 8170) are refused (reference §4.2). RPO per store, the worst
    against the budget."""
    replica = lab.spec.replica.name
    stores: list[StoreSeen] = []
    with lab.pe(replica, token_file=FAILOVER_TOKEN) as pe:
        reported = _replication_reported(pe)
        for mark in markers.stores:
            before = None if mark.written_at is None else round(halted_at - mark.written_at, 3)
            try:
                seen = look(lab, pe, mark, markers.agent)
            except PeDrError as exc:
                stores.append(
                    StoreSeen(
                        mark.store,
                        False,
                        False,
                        before,
                        mark.reached_after,
                        None,
                        str(exc),
                        mark.unwritten,
                    )
                )
                continue
            has = bool(seen.pop("has_marker"))
            text = ", ".join(f"{k} {v}" for k, v in seen.items())
            stores.append(
                StoreSeen(
                    mark.store,
                    True,
                    has,
                    before,
                    mark.reached_after,
                    reported.get(mark.store),
                    text,
                    mark.unwritten,
                )
            )
        group_id = markers.of("classifier").ref
        read_only = {
            "classification edit": _refused(
                lambda: pe.update_group(group_id, {"variables": {FACT: "edited on the replica"}})
            ),
            "code deploy": _refused(
                lambda: pe.deploy([lab.spec.environment], wait=False, timeout=10.0)
            ),
        }
    result = judge(stores, read_only, budget_seconds=budget_seconds, replica=replica)
    result.evidence["marker"] = markers.marker
    return result
