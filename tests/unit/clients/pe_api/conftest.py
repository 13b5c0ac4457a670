"""Fixtures of the PEClient tests: the fake PE and a client talking to it with the admin token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pe_dr.clients.pe_api import PEClient

from .fake_pe import SERVER, TOKEN, FakePE


@pytest.fixture
def fake() -> FakePE:
    return FakePE()


@pytest.fixture
def pe(fake: FakePE) -> Iterator[PEClient]:
    with PEClient(
        SERVER, host_map={}, ca_pem=None, token=TOKEN, transport=httpx.MockTransport(fake)
    ) as client:
        yield client
