"""Drill tests run the real flows against labsim, on a Prefect test server with isolated storage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Read by tasks at import: back-off sized for a simulated lab.
os.environ.setdefault("PE_DR_RETRY_DELAY_SCALE", "0.01")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(storage)
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def lab_env(monkeypatch: pytest.MonkeyPatch) -> object:
    """Apply a LabHandle's exports to this process for one test."""

    def apply(handle: object) -> None:
        for name, value in handle.env.items():  # type: ignore[attr-defined]
            monkeypatch.setenv(name, value)

    return apply


def journal_ops(handle: object, op: str) -> list[dict[str, object]]:
    return [e for e in handle.journal() if e.get("op") == op]  # type: ignore[attr-defined]


def read_report(path: Path) -> dict[str, object]:
    import json

    return json.loads(path.read_text())
