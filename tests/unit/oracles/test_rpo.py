"""Judging what the replica served during the outage, and RPO per store (milliseconds)."""

from __future__ import annotations

import pytest

from pe_dr.oracles.rpo import StoreSeen, judge
from pe_dr.steps.markers import MARKER_TAG, NAME_PREFIX, is_drill_owned, new_marker

REFUSED = {"classification edit": "refused (403)", "code deploy": "refused (connection refused)"}


def store(name: str, **kw: object) -> StoreSeen:
    fields: dict[str, object] = {
        "answered": True,
        "has_marker": True,
        "written_before_halt": 1.0,
        "reached_after": 0.5,
    }
    fields.update(kw)
    return StoreSeen(name, **fields)  # type: ignore[arg-type]


def stores(**overrides: dict[str, object]) -> list[StoreSeen]:
    names = ("classifier", "rbac", "puppetdb", "code")
    return [store(n, **overrides.get(n, {})) for n in names]


def test_every_marker_served_and_edits_refused_passes_with_the_worst_store_as_rpo() -> None:
    seen = stores(puppetdb={"reached_after": 4.0}, code={"reached_after": None})
    result = judge(seen, REFUSED, budget_seconds=10, replica="replica.vm")
    assert result.passed, result.detail
    assert result.seconds == 4.0
    assert result.evidence["stores"]["puppetdb"]["rpo_seconds"] == 4.0  # type: ignore[index]
    assert result.evidence["stores"]["code"]["rpo_seconds"] is None  # type: ignore[index]
    assert "puppetdb 4.0 s" in result.detail


def test_a_store_without_its_marker_serves_stale_data_and_fails_naming_it() -> None:
    seen = stores(classifier={"has_marker": False, "replication": {"status": "inactive"}})
    result = judge(seen, REFUSED, budget_seconds=10, replica="replica.vm")
    assert not result.passed
    assert result.detail.startswith("classifier on replica.vm serves stale data")
    assert "written 1.0 s before the halt" in result.detail
    assert "inactive" in result.detail
    assert result.evidence["stores"]["classifier"]["rpo_seconds"] is None  # type: ignore[index]
    assert result.evidence["stores"]["classifier"]["rpo_at_least_s"] == 1.0  # type: ignore[index]
    assert result.seconds is None, "the worst store's RPO is not known, only bounded"


def test_a_store_that_does_not_answer_fails() -> None:
    seen = stores(rbac={"answered": False, "has_marker": False, "detail": "503"})
    result = judge(seen, REFUSED, budget_seconds=10, replica="replica.vm")
    assert not result.passed
    assert result.detail.startswith("rbac on replica.vm did not answer (503)")


@pytest.mark.parametrize("probe", ["classification edit", "code deploy"])
def test_a_replica_that_accepts_an_edit_or_a_deploy_fails(probe: str) -> None:
    read_only = {**REFUSED, probe: "accepted: {}"}
    result = judge(stores(), read_only, budget_seconds=10, replica="replica.vm")
    assert not result.passed
    assert result.detail.startswith(f"{probe} on replica.vm was not refused")


def test_an_rpo_over_budget_fails_and_keeps_the_figure() -> None:
    result = judge(
        stores(puppetdb={"reached_after": 12.5}), REFUSED, budget_seconds=10, replica="r"
    )
    assert not result.passed
    assert result.seconds == 12.5
    assert "RPO 12.5 s (puppetdb) is over the budget of 10 s" in result.detail


def test_several_problems_are_counted() -> None:
    seen = stores(classifier={"has_marker": False}, rbac={"has_marker": False})
    result = judge(seen, REFUSED, budget_seconds=10, replica="replica.vm")
    assert result.detail.endswith("(and 1 more)")


def test_only_objects_with_the_prefix_and_the_tag_are_the_drills() -> None:
    assert is_drill_owned(f"{NAME_PREFIX}abc", f"{MARKER_TAG} run x")
    assert not is_drill_owned(f"{NAME_PREFIX}abc", "an admin's group with our name")
    assert not is_drill_owned("Production servers", f"{MARKER_TAG} copied by an admin")
    assert not is_drill_owned(None, MARKER_TAG)


def test_every_attempt_writes_a_marker_of_its_own() -> None:
    assert new_marker("run-1") != new_marker("run-1")
    assert new_marker("run-1").startswith("pe-dr-drill run-1 ")


def test_a_store_whose_marker_could_not_be_written_is_not_judged_stale_but_said() -> None:
    seen = stores(
        puppetdb={
            "has_marker": False,
            "written_before_halt": None,
            "reached_after": None,
            "unwritten": "the agent run that sends it: exit 1",
        }
    )
    result = judge(seen, REFUSED, budget_seconds=10, replica="replica.vm")
    assert result.passed, result.detail
    assert "puppetdb not measured: the agent run that sends it: exit 1" in result.detail
    assert result.seconds == 0.5
    assert result.evidence["stores"]["puppetdb"]["rpo_at_least_s"] is None  # type: ignore[index]
