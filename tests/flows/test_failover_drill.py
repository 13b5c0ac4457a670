"""What the replica serves during failover, and RPO per store, against the shared built lab.

Failover drills only (the cheapest flow that halts the primary); each per-store fault must fail
the drill at the replica's check, name its store, and leave no marker behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import load_spec
from pe_dr.report import DrillReport
from pe_dr.steps.markers import FAILOVER_TOKEN
from pe_dr.steps.stores import ALL_NODES_ID, FACT_FILE, MARKER_TAG, NAME_PREFIX

pytestmark = pytest.mark.slow

Drill = Callable[..., tuple[bool, DrillReport]]
FAILOVER = "failover_drill"


def leftovers(handle: LabHandle) -> list[str]:
    """Every drill-owned object still in the lab."""
    found: list[str] = []
    with Lab(load_spec(handle.spec_path)) as live, live.pe() as pe:
        found += [g["name"] for g in pe.groups() if MARKER_TAG in str(g.get("description"))]
        found += [r["display_name"] for r in pe.roles() if MARKER_TAG in str(r.get("description"))]
        if live.host("linux.vm").exists(FACT_FILE, root=True):
            found.append(FACT_FILE)
        if live.host("replica.vm").exists(FAILOVER_TOKEN, root=True):
            found.append(FAILOVER_TOKEN)
    return found


def _served(report: DrillReport) -> dict[str, Any]:
    return next(c for c in report.to_dict()["checks"] if c["name"] == "replica_serves")


def test_stores_that_do_not_replicate_fail_the_replica_check_and_leave_no_marker(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("replication:classifier=broken")
    built.fault_add("replication:rbac=broken")
    ok, report = run_drill(tmp_path, flow=FAILOVER)
    data = report.to_dict()
    assert not ok
    failed = [c for c in data["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["replica_serves"], data["checks"]
    assert failed[0]["detail"].startswith("classifier on replica.vm serves stale data")
    assert failed[0]["detail"].endswith("(and 3 more)")  # rbac stale, and both latencies
    stores = failed[0]["evidence"]["stores"]
    assert [k for k, v in stores.items() if not v["marker_on_replica"]] == ["classifier", "rbac"]
    assert report.measurements["rpo_seconds"] is None
    assert built.status()["primary.vm"] == "running"
    assert leftovers(built) == [], "clean-up runs when the drill fails"


def test_a_puppetdb_sync_that_stopped_fails_by_its_age_though_its_marker_arrived(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    # Puppet Server broadcasts the marker's write to both PuppetDBs (real-world-findings §4.1
    # row 4): only the sync's own age can show that sync stopped
    built.fault_add("replication:puppetdb=broken")
    ok, report = run_drill(tmp_path, flow=FAILOVER, budgets={"puppetdb_sync_seconds": 1.0})
    assert not ok
    served = _served(report)
    assert "PuppetDB on replica.vm last synced" in served["detail"], served["detail"]
    assert "over the 1 s budget" in served["detail"]
    assert served["evidence"]["stores"]["puppetdb"]["marker_on_replica"] is True
    assert report.measurements["puppetdb_sync_seconds"] > 1.0
    assert leftovers(built) == []


def test_a_replica_that_accepts_a_classification_edit_fails_and_the_edit_is_undone(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    built.fault_add("replica:classifier-writable")
    ok, report = run_drill(tmp_path, flow=FAILOVER)
    assert not ok
    served = _served(report)
    assert not served["passed"]
    assert (
        "replica.vm accepted a classification edit during the outage (undone)" in (served["detail"])
    )
    edit = served["evidence"]["read_only"]["classification edit"]
    assert edit["verdict"] == "accepted" and edit["undone"] is True
    assert built.status()["primary.vm"] == "running"
    assert leftovers(built) == []


def test_rpo_is_measured_from_writes_up_to_the_halt_and_nothing_an_admin_made_is_touched(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    spec = load_spec(built.spec_path)
    with Lab(spec) as live, live.pe() as pe:
        # an admin's group and user, one of them named like the drill's markers, and a marker
        # an earlier, crashed attempt left behind
        admin_group = pe.create_group(
            {"name": f"{NAME_PREFIX}made by an admin", "parent": ALL_NODES_ID, "classes": {}}
        )
        pe.create_user("ops-admin", email="ops@example.com", display_name="Ops admin")
        left = pe.create_group(
            {
                "name": f"{NAME_PREFIX}crashed",
                "parent": ALL_NODES_ID,
                "description": f"{MARKER_TAG} left by a crash",
                "classes": {},
            }
        )
        groups_before = {g["id"]: g for g in pe.groups()}
        user_before = pe.user_by_login("ops-admin")
    # the classifier's database replication 1 s behind: what the primary acknowledged in its
    # last second is lost; PE's other possible answers on the replica (labsim/faults.py)
    for fault in ("replication:classifier=1", "replica:says-read-only", "replica:accepts-tokens"):
        built.fault_add(fault)
    ok, report = run_drill(tmp_path, flow=FAILOVER, budgets={"rpo_seconds": 30.0})
    assert ok, report.to_dict()
    served = _served(report)
    stores = served["evidence"]["stores"]
    classifier, rbac = stores["classifier"], stores["rbac"]
    assert classifier["rpo_seconds"] >= 1.0, classifier
    assert classifier["lost_writes"] >= 1, classifier
    assert classifier["newest_served"] < classifier["newest_written"]
    assert rbac["rpo_seconds"] < classifier["rpo_seconds"], (rbac, classifier)
    assert report.measurements["rpo_seconds"] == classifier["rpo_seconds"]
    assert report.measurements["replication_latency_seconds"] >= 1.0
    # both paths answered: the certificate first, the token too (replica:accepts-tokens)
    assert classifier["answered_by"] == "certificate"
    assert classifier["paths"] == {"certificate": "answered", "token": "answered"}
    assert stores["puppetdb"]["paths"]["token"].startswith(
        "PuppetDB on replica.vm:8081 answered HTTP 503"
    )
    assert served["evidence"]["read_only"]["classification edit"]["verdict"] == "proven"
    assert served["evidence"]["read_only"]["code deploy"].startswith("refused")
    assert "read-only proven" in served["detail"]
    assert any("replaced markers" in n and "crashed" in n for n in report.notes), report.notes
    with Lab(spec) as live, live.pe() as pe:
        groups: dict[str, Any] = {g["id"]: g for g in pe.groups()}
        assert groups[admin_group] == groups_before[admin_group]
        assert left not in groups
        assert pe.user_by_login("ops-admin") == user_before
        pe.delete_group(admin_group)  # the test's own
    assert leftovers(built) == [], "clean-up runs when the drill passes"
