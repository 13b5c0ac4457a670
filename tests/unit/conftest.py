"""Fixtures of the steps' unit tests: a FakeLab of the tutorial's lab, on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pe_dr import polling, secrets
from pe_dr.checks import agents, replication
from pe_dr.lab import virtualbox
from pe_dr.steps import vms

from .fake_lab import FakeLab
from .fakes import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Time for wait_until, Pacer and the checks' polls: sleeping advances it, so none waits."""
    fake = FakeClock()
    for module in (polling, agents, replication, vms):
        monkeypatch.setattr(module, "time", fake)
    return fake


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[FakeLab]:
    """The tutorial's lab, all VMs running, nothing scripted yet.

    Secrets come only from the environment the test sets (no Prefect Secret block provider), the
    secrets remembered for scrubbing are restored afterwards, and VirtualBox counts as absent
    (no host-only address check) unless a test says otherwise."""
    monkeypatch.setattr(secrets, "_providers", [])
    monkeypatch.setattr(secrets, "_known", set(secrets._known))
    monkeypatch.delenv(secrets.ENV_NAMES[secrets.PE_CONSOLE_PASSWORD], raising=False)
    monkeypatch.setattr(virtualbox, "virtualbox_version", lambda: None)
    fake = FakeLab()
    yield fake
    assert not fake.unexpected, f"the action did something unscripted: {fake.unexpected}"
