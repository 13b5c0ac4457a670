"""Judging what the replica served during the outage: RPO from the marker stream, replication
latency, PuppetDB's sync age, the read-only probe (milliseconds)."""

from __future__ import annotations

from typing import Any

import pytest

from pe_dr.checks.rpo import Budgets, judge, probe_read_only
from pe_dr.errors import ApiError, TransientError
from pe_dr.steps.stores import (
    MARKER_TAG,
    NAME_PREFIX,
    Outage,
    StoreSeen,
    is_drill_owned,
    new_marker,
    number_in,
    numbered,
)

BUDGETS = Budgets(rpo=10, latency=5, puppetdb_sync=120)
PROVEN = {"verdict": "proven", "status": 403, "kind": "puppetlabs.classifier/read-only"}
READ_ONLY: dict[str, Any] = {
    "classification edit": PROVEN,
    "code deploy": "refused (cannot reach replica.vm:8170: connection refused)",
}


def store(name: str, **kw: Any) -> StoreSeen:
    fields: dict[str, Any] = {
        "answered_by": "certificate",
        "paths": {"certificate": "answered", "token": "HTTP 401"},
        "has_marker": True,
    }
    if name in ("classifier", "rbac"):
        fields.update(latency=0.4, rpo=1.5, newest_written=6, newest_served=5)
    if name == "puppetdb":
        fields.update(sync_age=30.0)
    fields.update(kw)
    return StoreSeen(name, **fields)


def stores(**overrides: dict[str, Any]) -> list[StoreSeen]:
    return [store(n, **overrides.get(n, {})) for n in ("classifier", "rbac", "puppetdb", "code")]


def verdict(seen: list[StoreSeen], read_only: dict[str, Any] = READ_ONLY, **kw: Any) -> Any:
    return judge(
        seen, read_only, budgets=Budgets(**{**BUDGETS.__dict__, **kw}), replica="replica.vm"
    )


def test_every_store_served_passes_with_the_worst_streamed_store_as_rpo() -> None:
    result = verdict(stores(rbac={"rpo": 2.5, "newest_served": 4, "latency": 0.9}))
    assert result.passed, result.detail
    assert result.seconds == 2.5
    assert result.figures == {"replication_latency_seconds": 0.9, "puppetdb_sync_seconds": 30.0}
    assert result.evidence["stores"]["rbac"]["lost_writes"] == 2
    assert "rbac 2.5 s (2 lost)" in result.detail
    assert "read by certificate" in result.detail and "read-only proven" in result.detail


def test_a_stream_store_without_its_marker_serves_stale_data_and_fails_naming_it() -> None:
    seen = stores(
        classifier={"has_marker": False, "rpo": None, "newest_served": None,
                    "replication": {"status": "inactive"}}
    )  # fmt: skip
    result = verdict(seen)
    assert not result.passed
    assert result.detail.startswith("classifier on replica.vm serves stale data")
    assert "inactive" in result.detail
    assert result.seconds is None, "the worst store's RPO is not known"


def test_a_store_no_path_could_read_fails_saying_what_each_path_said() -> None:
    paths = {"certificate": "curl exited with 7", "token": "HTTP 503 RBAC down"}
    seen = stores(puppetdb={"answered_by": None, "paths": paths, "has_marker": False})
    result = verdict(seen)
    assert not result.passed
    assert result.detail.startswith(
        "puppetdb on replica.vm did not answer (certificate: curl exited with 7; token: HTTP 503"
    )


def test_the_path_that_answered_is_in_the_evidence() -> None:
    seen = stores(rbac={"answered_by": "token", "paths": {"certificate": "HTTP 403",
                                                           "token": "answered"}})  # fmt: skip
    result = verdict(seen)
    assert result.passed, result.detail
    assert result.evidence["stores"]["rbac"]["answered_by"] == "token"
    assert result.evidence["stores"]["rbac"]["paths"]["certificate"] == "HTTP 403"


def test_an_rpo_over_budget_fails_and_keeps_the_figure() -> None:
    result = verdict(stores(classifier={"rpo": 12.5, "newest_served": 1}))
    assert not result.passed
    assert result.seconds == 12.5
    assert "RPO 12.5 s (classifier: 5 acknowledged writes lost) is over the budget" in result.detail


FIGURE_OF = {"latency": "replication_latency_seconds", "sync_age": "puppetdb_sync_seconds"}


@pytest.mark.parametrize(
    ("store_", "field", "seen", "words"),
    [("classifier", "latency", 7.0, "replication latency 7.0 s is over its 5 s budget"),
     ("classifier", "latency", None, "the first marker did not reach replica.vm within the 5 s"),
     ("puppetdb", "sync_age", 300.0, "300 s before the primary went down, over the 120 s budget"),
     ("puppetdb", "sync_age", None, "reports no successful sync")],
)  # fmt: skip
def test_replication_latency_and_puppetdb_sync_are_each_judged_against_their_own_budget(
    store_: str, field: str, seen: Any, words: str
) -> None:
    result = verdict(stores(**{store_: {field: seen}}))
    assert not result.passed
    assert words in result.detail
    assert result.figures[FIGURE_OF[field]] == seen


@pytest.mark.parametrize(
    ("error", "verdict_"),
    [
        (ApiError("classifier API", 403, "read-only replica", kind="x/read-only"), "proven"),
        (ApiError("classifier API", 405, "the classifier is read only here"), "proven"),
        (ApiError("classifier API", 403, "Permission denied", kind="x/permission-denied"),
         "not proven"),
        (ApiError("classifier API", 401, "token invalid"), "not proven"),
        (ApiError("classifier API", 404, "not found"), "not proven"),
        (ApiError("classifier API", 409, "conflict"), "not proven"),
        (TransientError("cannot reach replica.vm:4433: connection refused"), "not proven"),
    ],
)  # fmt: skip
def test_only_a_refusal_that_says_read_only_proves_it(error: Exception, verdict_: str) -> None:
    def edit() -> None:
        raise error

    seen = probe_read_only(edit)
    assert seen["verdict"] == verdict_
    if verdict_ == "not proven":
        assert seen["reason"]
        result = verdict(stores(), {**READ_ONLY, "classification edit": seen})
        assert result.passed, "not proven is said, never a failure nor a pass of the probe"
        assert "read-only not proven" in result.detail


def test_a_replica_that_accepts_the_edit_fails_and_says_whether_it_was_undone() -> None:
    seen = probe_read_only(lambda: {"id": "g"})
    assert seen["verdict"] == "accepted"
    for undone, word in ((True, "(undone)"), (False, "(NOT undone)")):
        edit = {**seen, "undone": undone}
        result = verdict(stores(), {**READ_ONLY, "classification edit": edit})
        assert not result.passed
        assert f"replica.vm accepted a classification edit during the outage {word}" in (
            result.detail
        )


def test_a_code_deploy_the_replica_accepts_fails() -> None:
    result = verdict(stores(), {**READ_ONLY, "code deploy": "accepted: [{}]"})
    assert not result.passed
    assert "code deploy on replica.vm was not refused" in result.detail


def test_several_problems_are_counted() -> None:
    seen = stores(classifier={"has_marker": False, "rpo": None},
                  rbac={"has_marker": False, "rpo": None})  # fmt: skip
    assert verdict(seen).detail.endswith("(and 1 more)")


def test_a_store_whose_marker_could_not_be_written_is_not_judged_but_said() -> None:
    seen = stores(puppetdb={"has_marker": False, "sync_age": 1.0,
                            "unwritten": "the agent run that sends it: exit 1"})  # fmt: skip
    result = verdict(seen)
    assert result.passed, result.detail
    assert "puppetdb not measured: the agent run that sends it: exit 1" in result.detail


def test_marker_numbers_are_read_back_from_the_text_the_replica_serves() -> None:
    marker = new_marker("run-1")
    assert number_in(numbered(marker, 7), marker) == 7
    assert number_in(f"{MARKER_TAG} written by x: {numbered(marker, 12)}", marker) == 12
    assert number_in(numbered(new_marker("run-1"), 7), marker) is None  # another attempt's
    assert number_in(None, marker) is None


def test_the_outage_knows_each_writes_acknowledgement() -> None:
    outage = Outage(10.0, 12.0, 11.0, 0.5, {"classifier": ((1, 9.0), (2, 9.5)), "rbac": ()})
    assert outage.acked("classifier", 2) == 9.5
    assert outage.acked("classifier", 3) is None
    assert outage.newest("classifier") == 2
    assert outage.newest("rbac") is None


def test_only_objects_with_the_prefix_and_the_tag_are_the_drills() -> None:
    assert is_drill_owned(f"{NAME_PREFIX}abc", f"{MARKER_TAG} run x")
    assert not is_drill_owned(f"{NAME_PREFIX}abc", "an admin's group with our name")
    assert not is_drill_owned("Production servers", f"{MARKER_TAG} copied by an admin")
    assert not is_drill_owned(None, MARKER_TAG)


def test_every_attempt_writes_a_marker_of_its_own() -> None:
    assert new_marker("run-1") != new_marker("run-1")
    assert new_marker("run-1").startswith("pe-dr-drill run-1 ")
