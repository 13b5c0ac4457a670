"""Drill tests run the real flows against labsim, on a Prefect test server with isolated storage.

One lab is built by the drill itself (from VMs not_created) per session and shared; tests add
faults and clear them again, and must leave the primary running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Read by tasks at import: back-off sized for a simulated lab.
os.environ.setdefault("PE_DR_RETRY_DELAY_SCALE", "0.01")

from labsim.testing import PG_BIN, LabHandle, prefect_server_on_postgres, running_lab
from pe_dr.report import DrillReport

# `--yes`: either PE server may be the primary the drill halts (a promotion swaps them)
PE_SERVERS = ["primary.vm", "replica.vm"]
FAST = {"rto_seconds": 10.0, "replication_lag_seconds": 5.0, "failback_seconds": 10.0}

Drill = Callable[..., tuple[bool, DrillReport]]
Ops = Callable[..., list[dict[str, Any]]]


def drill(tmp: Path, flow: str = "dr_drill", **overrides: Any) -> tuple[bool, DrillReport]:
    """Run a flow in this process; (completed?, its journal)."""
    from flows import journal
    from flows.params import (
        Budgets,
        DrillParameters,
        FailoverParameters,
        ReprotectParameters,
    )
    from flows.registry import FLOWS

    budgets = Budgets(**{**FAST, **overrides.pop("budgets", {})})
    if flow == "dr_drill":
        params: Any = DrillParameters(
            confirm=PE_SERVERS,
            budgets=budgets,
            poll_interval_seconds=0.1,
            report_dir=str(tmp),
            **overrides,
        )
        state = FLOWS["dr-drill"](params, return_state=True)
    elif flow == "reprotect":
        overrides.setdefault("confirm", PE_SERVERS)
        params = ReprotectParameters(budgets=budgets, poll_interval_seconds=0.1, **overrides)
        state = FLOWS["reprotect"](params, return_state=True)
    else:
        overrides.setdefault("confirm", PE_SERVERS)
        params = FailoverParameters(budgets=budgets, poll_interval_seconds=0.1, **overrides)
        state = FLOWS["failover-drill"](params, return_state=True)
    report = journal.record_of(state)
    assert report is not None, "every drill writes a journal"
    return state.is_completed(), report


def ops(handle: LabHandle, op: str, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in handle.journal()[since:] if e.get("op") == op]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Prefect server for the in-process drills: on PostgreSQL where it is installed (a drill
    on a built lab takes half the time it takes on SQLite, where the API's writes wait for the
    database's one writer lock: README Performance), else Prefect's test server on SQLite."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(storage)
    if not (PG_BIN / "initdb").exists():
        with prefect_test_harness(server_startup_timeout=120):
            yield
        return
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        prefect_server_on_postgres(home) as api,
        temporary_settings({PREFECT_API_URL: api}),
        # as prefect_test_harness does: threads the drill starts (whose context is not
        # copied) see this server too, instead of starting a temporary one each
        prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()),
    ):
        yield
        # the logs and events still queued reach the server before it stops (as the
        # harness does; else "All connection attempts failed" at exit)
        with contextlib.suppress(RuntimeError):  # (no log worker was started)
            APILogWorker.instance().drain()
        EventsWorker.drain_all()


@pytest.fixture(scope="session")
def lab(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None
) -> Iterator[tuple[LabHandle, bool, DrillReport]]:
    """A labsim lab built by the drill itself from nothing (all VMs not_created)."""
    state = tmp_path_factory.mktemp("lab")
    with running_lab(state) as handle, pytest.MonkeyPatch.context() as mp:
        for name, value in handle.env.items():
            mp.setenv(name, value)
        assert set(handle.status().values()) == {"not_created"}
        ok, report = drill(tmp_path_factory.mktemp("reports"))
        yield handle, ok, report


@pytest.fixture
def built(lab: tuple[LabHandle, bool, DrillReport]) -> Iterator[LabHandle]:
    handle, ok, report = lab
    assert ok, f"the first drill must pass to test the rest: {report.to_dict()}"
    yield handle
    handle.fault_clear()
    assert handle.status()["primary.vm"] == "running", "every drill leaves the lab whole"


@pytest.fixture(scope="session")
def run_drill() -> Drill:
    return drill


@pytest.fixture(scope="session")
def journal_ops() -> Ops:
    return ops
