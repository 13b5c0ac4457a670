"""The registry of replicated stores (pe_dr/steps/stores.py) is the one place a store is named: a
store added to STORES is written, watched until the replica serves it, streamed into up to the
halt, removed, looked at and judged, with nothing else to wire."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from pe_dr.checks.rpo import Budgets, judge
from pe_dr.lab.spec import load_spec
from pe_dr.steps import markers, stores
from pe_dr.steps.stores import (
    CERTIFICATE,
    TOKEN,
    Looking,
    Markers,
    Outage,
    StoreMarker,
    Streamed,
    Writing,
    numbered,
)

READ_ONLY: dict[str, Any] = {
    "classification edit": {"verdict": "proven", "status": 403},
    "code deploy": "refused (HTTP 403)",
}


class Jobs(Streamed):
    """A store the drill did not know: a text it rewrites as `<marker> #N`, which the replica
    serves as soon as it is written (replication in this test is instant)."""

    name = "jobs"

    def __init__(self) -> None:
        self.text: str | None = None
        self.removed = 0

    def write(self, at: Writing) -> StoreMarker:
        self.text = numbered(at.marker, 0)
        return StoreMarker(self.name, ref="job-1", written_at=time.time())

    def value(self, pe: Any, ref: str) -> object:
        return self.text if ref == "job-1" else None

    def streamer(self, pe: Any, markers: Markers) -> Callable[[int], object]:
        def write(n: int) -> object:
            self.text = numbered(markers.marker, n)
            return n

        return write

    def remove(self, lab: Any, pe: Any) -> list[str]:
        self.removed += 1
        return [f"job {self.removed}"]


class FakePE:
    token = "admin-token"

    def __init__(self) -> None:
        self._http = SimpleNamespace(timeout=None)

    def close(self) -> None:
        pass


class FakeLab:
    def __init__(self) -> None:
        self.spec = load_spec(None)
        self.puts: list[str] = []

    def pe(self, name: str | None = None, **kwargs: Any) -> Any:
        return _Both(FakePE())

    def pe_on(self, name: str) -> Any:
        return _Both(FakePE())

    def host(self, name: str) -> Any:
        lab = self
        return SimpleNamespace(
            exists=lambda path, root=False: False,
            put=lambda path, content, **kw: lab.puts.append(path),
        )


class _Both:
    """A client usable as it is and as a context manager, like PEClient."""

    def __init__(self, client: FakePE) -> None:
        self.client = client
        self._http = client._http
        self.token = client.token

    def __enter__(self) -> FakePE:
        return self.client

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> Jobs:
    store = Jobs()
    monkeypatch.setattr(stores, "STORES", (store,))
    return store


def test_a_store_added_to_the_registry_is_written_watched_streamed_and_removed(jobs: Jobs) -> None:
    lab = FakeLab()
    marks = markers.write_markers(
        lab,  # type: ignore[arg-type]
        run_id="run-1",
        budget_seconds=5,
        poll_interval=0.01,
    )
    assert [m.store for m in marks.stores] == ["jobs"]
    assert marks.of("jobs").ref == "job-1"
    assert marks.of("jobs").latency is not None, "watched until the replica served it"
    assert marks.removed_before == ("job 1",), "an earlier drill's objects removed first"
    assert stores.streamed() == ("jobs",)
    with markers.MarkerStream(lab, marks, 0.01) as stream:  # type: ignore[arg-type]
        assert stream.wait_for_writes(2, timeout=5.0)
    assert len(stream.writes["jobs"]) >= 2
    assert jobs.text == numbered(marks.marker, stream.writes["jobs"][-1][0])
    assert markers.remove_markers(lab, replica_too=False) == ["job 2"]  # type: ignore[arg-type]


def test_a_store_added_to_the_registry_is_looked_at_and_judged_for_its_rpo(jobs: Jobs) -> None:
    marks = Markers(
        "pe-dr-drill run-1 abc", "linux.vm", (StoreMarker("jobs", "job-1", 100.0, 0.5),)
    )
    jobs.text = numbered(marks.marker, 2)  # the replica serves the second write
    outage = Outage(110.0, 111.0, 110.5, 1.0, {"jobs": ((1, 108.0), (2, 109.0), (3, 110.0))})
    paths: dict[str, Any] = {CERTIFICATE: FakePE(), TOKEN: None}
    at = Looking(FakeLab(), paths, marks, outage, {})  # type: ignore[arg-type]
    seen = stores.store("jobs").look(at, marks.of("jobs"))
    assert (seen.answered_by, seen.newest_served, seen.lost_writes) == (CERTIFICATE, 2, 1)
    assert seen.rpo == 1.5  # down at 110.5, the newest served acknowledged at 109.0
    result = judge([seen], READ_ONLY, budgets=Budgets(10, 5, 120), replica="replica.vm")
    assert result.passed, result.detail
    assert result.seconds == 1.5, "the new store's RPO is the drill's"
    over = judge([seen], READ_ONLY, budgets=Budgets(1, 5, 120), replica="replica.vm")
    assert not over.passed and "jobs: 1 acknowledged writes lost" in over.detail
