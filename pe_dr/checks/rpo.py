"""What the replica serves while the primary is down, and what a lost primary loses (RPO).

Each store is read by its own look (the registry of stores, pe_dr.steps.stores) the way PE's
own services read it: on the replica, over SSH, with its host certificate (pe_dr.lab.on_host),
since its PuppetDB checks a token with the primary's RBAC and its RBAC may not accept one at all
then (real-world-findings §4.1 rows 1-2). The admin token copied to the replica is the second
path; the evidence says which path answered each store and what the other one said. This module
judges what the looks saw.

- RPO of the classifier and RBAC (database replication): the marker stream was written up to the
  halt (pe_dr.steps.markers); the newest marker the replica serves, against the moment the
  primary went down, is what a primary lost then would take with it. An upper bound by one write
  interval: the stream writes once per interval.
- Replication latency: how long the first marker took to reach the replica, both servers up.
- PuppetDB: every write reaches both PuppetDBs (command broadcast), so its marker proves what the
  replica serves; its sync, which repairs what one side missed, is judged by its own age at the
  halt (PE's "Last sync successfully completed N seconds ago"; PuppetDB's
  `seconds-since-last-successful-sync`).
- Read-only: a classification edit on the replica must be refused, and only a refusal that says
  the replica is read-only proves it (PE does not document the answer: §4.1 row 3); any other
  refusal is "not proven", with what it was. An edit the replica accepts is undone and fails the
  check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pe_dr.checks.result import CheckResult
from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import ApiError, PeDrError
from pe_dr.lab.live import Lab
from pe_dr.steps import stores as registry
from pe_dr.steps.markers import FAILOVER_TOKEN
from pe_dr.steps.stores import (
    CERTIFICATE,
    FACT,
    TOKEN,
    Looking,
    Markers,
    Outage,
    StoreSeen,
    group_marker,
    replication_reported,
)

NAME = "replica_serves"
READ_ONLY = re.compile(r"read[- ]?only", re.IGNORECASE)
EDIT = "edited on the replica by pe-dr-drill's read-only probe"


@dataclass(frozen=True)
class Budgets:
    rpo: float
    latency: float
    puppetdb_sync: float


def probe_read_only(edit: Callable[[], Any]) -> dict[str, Any]:
    """The classification edit against the replica, recorded as what it got: `proven` only for
    a refusal that says the replica is read-only; `not proven` (with the reason) for any other
    refusal or a connection error; `accepted` when the replica took it."""
    try:
        answer = edit()
    except ApiError as exc:
        says = READ_ONLY.search(f"{exc.kind or ''} {exc.message}") is not None
        return {
            "verdict": "proven" if says else "not proven",
            "status": exc.status,
            "kind": exc.kind,
            "said": exc.message,
            "reason": None if says else f"HTTP {exc.status} does not say the replica is read-only",
        }
    except PeDrError as exc:
        return {"verdict": "not proven", "status": None, "kind": None, "said": str(exc),
                "reason": "the edit did not reach the classifier"}  # fmt: skip
    return {"verdict": "accepted", "status": 200, "kind": None, "said": repr(answer)[:200]}


def _refused(action: Callable[[], Any]) -> str:
    try:
        answer = action()
    except ApiError as exc:
        return f"refused (HTTP {exc.status}{' ' + exc.kind if exc.kind else ''})"
    except PeDrError as exc:  # nothing serves it there: refused as well (no Code Manager)
        return f"refused ({exc})"
    return f"accepted: {answer!r}"[:200]


def judge(
    stores: list[StoreSeen],
    read_only: dict[str, Any],
    *,
    budgets: Budgets,
    replica: str,
) -> CheckResult:
    """One verdict over the stores and the read-only probes."""
    evidence: dict[str, object] = {
        "stores": {s.store: s.to_json() for s in stores},
        "read_only": dict(read_only),
    }
    streamed = [s for s in stores if s.store in registry.streamed() and s.judged]
    lost = any(s.rpo is None for s in streamed)
    worst = max((s.rpo for s in streamed if s.rpo is not None), default=None)
    worst = None if lost else worst
    latencies = [s.latency for s in streamed if s.latency is not None]
    latency = max(latencies) if latencies and len(latencies) == len(streamed) else None
    pdb = next((s for s in stores if s.store == "puppetdb"), None)
    sync = pdb.sync_age if pdb is not None else None
    problems = []
    for s in stores:
        if s.answered_by is None:
            said = "; ".join(f"{p}: {w}" for p, w in s.paths.items())
            problems.append(f"{s.store} on {replica} did not answer ({said})")
        elif not s.has_marker and s.judged:
            told = f"; PE reports its replication as {s.replication}" if s.replication else ""
            problems.append(
                f"{s.store} on {replica} serves stale data: the drill's marker never reached "
                f"it{told}"
            )
    for s in streamed:
        if s.latency is None and s.answered_by is not None:
            problems.append(
                f"{s.store}: the first marker did not reach {replica} within the "
                f"{budgets.latency:g} s replication latency budget, both servers up"
            )
        elif s.latency is not None and s.latency > budgets.latency:
            problems.append(
                f"{s.store}: replication latency {s.latency:.1f} s is over its "
                f"{budgets.latency:g} s budget"
            )
    if worst is not None and worst > budgets.rpo:
        slowest = max(streamed, key=lambda s: s.rpo or -1.0)
        problems.append(
            f"RPO {worst:.1f} s ({slowest.store}: {slowest.lost_writes} acknowledged writes "
            f"lost) is over the budget of {budgets.rpo:g} s"
        )
    if pdb is not None and pdb.judged and pdb.answered_by is not None:
        if sync is None:
            problems.append(
                f"PuppetDB on {replica} reports no successful sync (neither its status nor "
                "the seconds-since-last-successful-sync metric): what it missed is not repaired"
            )
        elif sync > budgets.puppetdb_sync:
            problems.append(
                f"PuppetDB on {replica} last synced {sync:.0f} s before the primary went down, "
                f"over the {budgets.puppetdb_sync:g} s budget"
            )
    edit = read_only.get("classification edit") or {}
    if edit.get("verdict") == "accepted":
        undone = "undone" if edit.get("undone") else "NOT undone"
        problems.append(
            f"{replica} accepted a classification edit during the outage ({undone}): PE's replica "
            "must be read-only"
        )
    deploy = str(read_only.get("code deploy", ""))
    if deploy.startswith("accepted"):
        problems.append(f"code deploy on {replica} was not refused ({deploy})")
    figures = {"replication_latency_seconds": latency, "puppetdb_sync_seconds": sync}
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return CheckResult(NAME, False, problems[0] + more, evidence, worst, figures)
    per = ", ".join(
        f"{s.store} {s.rpo:.1f} s ({s.lost_writes} lost)" for s in streamed if s.rpo is not None
    )
    paths = sorted({s.answered_by for s in stores if s.answered_by})
    proof = (
        "read-only proven"
        if edit.get("verdict") == "proven"
        else f"read-only not proven ({edit.get('reason') or edit.get('said')})"
    )
    skipped = [f"{s.store} not measured: {s.unwritten}" for s in stores if not s.judged]
    also = f"; {'; '.join(skipped)}" if skipped else ""
    sync_text = f"PuppetDB synced {sync:.0f} s before the halt" if sync is not None else ""
    return CheckResult(
        NAME,
        True,
        f"{replica} serves every store's marker, read by {' and '.join(paths)} (RPO {per}; "
        f"{sync_text}); {proof}; code deploy refused{also}",
        evidence,
        worst,
        figures,
    )


def _probe(
    lab: Lab, paths: dict[str, PEClient | None], group_id: str, before: object
) -> dict[str, Any]:
    """The read-only probes: a classification edit (by the first path that reaches the
    classifier; an accepted one undone through the same path) and a code deploy."""
    edit: dict[str, Any] = {}
    for name, pe in paths.items():
        if pe is None:
            continue
        edit = probe_read_only(partial(pe.update_group, group_id, {"variables": {FACT: EDIT}}))
        edit["path"] = name
        if edit["verdict"] == "accepted":
            edit["undone"] = _undo(pe, group_id, before)
        if edit["status"] is not None or edit["verdict"] == "accepted":
            break  # the classifier answered: its answer is the verdict
    deploy_by = paths[TOKEN] or paths[CERTIFICATE]
    assert deploy_by is not None
    return {
        "classification edit": edit,
        "code deploy": _refused(
            lambda: deploy_by.deploy([lab.spec.environment], wait=False, timeout=10.0)
        ),
    }


def check_replica_serves(
    lab: Lab,
    *,
    markers: Markers,
    outage: Outage,
    rpo_budget: float,
    latency_budget: float,
    puppetdb_sync_budget: float,
) -> CheckResult:
    """During the outage, before any agent run on the replica: each store's marker as the
    replica serves it, by its host certificate and by the copied token; RPO per streamed store,
    replication latency, PuppetDB's sync age; the read-only probes."""
    replica = lab.spec.replica.name
    cert = lab.pe_on(replica)
    try:
        token: PEClient | None = lab.pe(replica, token_file=FAILOVER_TOKEN)
    except PeDrError:
        token = None
    paths: dict[str, PEClient | None] = {CERTIFICATE: cert, TOKEN: token}
    try:
        at = Looking(lab, paths, markers, outage, replication_reported(cert))
        stores = [registry.store(mark.store).look(at, mark) for mark in markers.stores]
        before = next(s.seen.get("value") for s in stores if s.store == "classifier")
        read_only = _probe(lab, paths, markers.of("classifier").ref, before)
    finally:
        cert.close()
        if token is not None:
            token.close()
    result = judge(
        stores,
        read_only,
        budgets=Budgets(rpo_budget, latency_budget, puppetdb_sync_budget),
        replica=replica,
    )
    result.evidence["marker"] = markers.marker
    result.evidence["outage"] = {
        "down_at": outage.down_at,
        "halt_started_at": outage.halt_started_at,
        "halt_returned_at": outage.halt_returned_at,
        "write_interval_s": outage.interval,
        "writes_refused": dict(outage.refused),
    }
    return result


def _undo(pe: PEClient, group_id: str, value: object) -> bool:
    """Put back the marker value the replica served before the probe; whether it holds now."""
    try:
        pe.update_group(group_id, {"variables": {FACT: value}})
        return group_marker(pe, group_id) == value
    except PeDrError:
        return False
