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
from pe_dr.steps.markers import ALL_NODES_ID, FACT_FILE, FAILOVER_TOKEN, MARKER_TAG, NAME_PREFIX

pytestmark = pytest.mark.slow

Drill = Callable[..., tuple[bool, DrillReport]]
FAILOVER = "failover_drill"
RPO_FAST = {"rpo_seconds": 1.0}


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


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("replication:classifier=broken", "classifier on replica.vm serves stale data"),
        ("replication:rbac=broken", "rbac on replica.vm serves stale data"),
        # a sync slower than the budget: the fact was in flight when the primary went down
        ("replication:puppetdb=30", "puppetdb on replica.vm serves stale data"),
    ],
)
def test_a_store_that_does_not_replicate_fails_the_replica_check_and_leaves_no_marker(
    built: LabHandle, tmp_path: Path, run_drill: Drill, fault: str, words: str
) -> None:
    built.fault_add(fault)
    ok, report = run_drill(tmp_path, flow=FAILOVER, budgets=RPO_FAST)
    data = report.to_dict()
    assert not ok
    failed = [c for c in data["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["replica_serves"], data["checks"]
    assert failed[0]["detail"].startswith(words), failed[0]["detail"]
    store = fault.split(":")[1].split("=")[0]
    stores = failed[0]["evidence"]["stores"]
    assert stores[store]["marker_on_replica"] is False
    assert all(v["marker_on_replica"] for k, v in stores.items() if k != store), stores
    assert data["figures"][-1]["figure"] == "rpo_seconds"
    assert built.status()["primary.vm"] == "running"
    assert leftovers(built) == [], "clean-up runs when the drill fails"


def test_rpo_is_each_stores_delay_and_nothing_an_admin_made_is_touched(
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
    built.fault_add("replication:classifier=1")
    ok, report = run_drill(tmp_path, flow=FAILOVER, budgets={"rpo_seconds": 30.0})
    assert ok, report.to_dict()
    served = next(c for c in report.to_dict()["checks"] if c["name"] == "replica_serves")
    stores = served["evidence"]["stores"]
    assert stores["classifier"]["rpo_seconds"] >= 1.0, stores
    assert report.measurements["rpo_seconds"] == max(
        s["rpo_seconds"] for s in stores.values() if s["rpo_seconds"] is not None
    )
    assert served["evidence"]["read_only"]["classification edit"].startswith("refused")
    assert served["evidence"]["read_only"]["code deploy"].startswith("refused")
    assert any("replaced markers" in n and "crashed" in n for n in report.notes), report.notes
    with Lab(spec) as live, live.pe() as pe:
        groups: dict[str, Any] = {g["id"]: g for g in pe.groups()}
        assert groups[admin_group] == groups_before[admin_group]
        assert left not in groups
        assert pe.user_by_login("ops-admin") == user_before
        pe.delete_group(admin_group)  # the test's own
    assert leftovers(built) == [], "clean-up runs when the drill passes"
