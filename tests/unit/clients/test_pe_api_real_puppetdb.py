"""The product's PuppetDB reads against real PuppetDB answers (tests/golden/puppetdb-*, captured
from Debian's PuppetDB 7.12 in the real-Puppet tier): what the drill makes of each."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from pe_dr.clients.pe_api import PUPPETDB_PORT, PEClient
from pe_dr.errors import ApiError
from pe_dr.parsing.pe import last_sync_age
from pe_dr.steps.stores import FACT, fact_values, sync_age

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
SERVER = "replica.vm"
SYNC_METRIC = "/metrics/v2/read/puppetlabs.puppetdb.ha:name=seconds-since-last-successful-sync"


def _golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def _client(routes: dict[str, httpx.Response]) -> PEClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.port == PUPPETDB_PORT
        return routes.get(request.url.path) or httpx.Response(404, text="not found")

    return PEClient(SERVER, host_map={}, ca_pem=None, transport=httpx.MockTransport(answer))


def test_the_marker_fact_and_its_report_as_real_puppetdb_returns_them() -> None:
    facts = json.loads(_golden("puppetdb-facts.json"))
    report = json.loads(_golden("puppetdb-report.json"))
    with _client(
        {
            "/pdb/query/v4/facts": httpx.Response(200, json=facts),
            "/pdb/query/v4/reports": httpx.Response(200, json=[report]),
        }
    ) as pe:
        values = fact_values(pe, "linux.vm")
        assert len(values) == 1 and str(values[0]).startswith("pe-dr-drill real-puppetdb ")
        assert [row["name"] for row in pe.fact("linux.vm", FACT)] == [FACT]
        found = pe.report(report["hash"])
        assert found is not None and found["producer"] == "primary.vm"
        assert found["certname"] == "linux.vm" and found["noop"] is True


def test_real_puppetdbs_status_and_missing_sync_metric_give_nosync_age() -> None:
    """Open-source PuppetDB has no HA sync: no "Last sync" alert, and Jolokia answers the read of
    the sync metric with HTTP 200 and `"status": 404` in its body; the drill says the age came
    from nowhere rather than inventing one."""
    services = json.loads(_golden("puppetdb-status-services.json"))
    metric = json.loads(_golden("puppetdb-sync-metric-missing.json"))
    assert metric["status"] == 404 and "value" not in metric
    with _client(
        {
            "/status/v1/services": httpx.Response(200, json=services),
            SYNC_METRIC: httpx.Response(200, json=metric),
        }
    ) as pe:
        status = pe.services(PUPPETDB_PORT)["puppetdb-status"]
        assert status["state"] == "running"
        assert last_sync_age(status["active_alerts"]) is None
        assert pe.pdb_metric("seconds-since-last-successful-sync") is None
        assert sync_age(pe) == (None, "none")


def test_a_certificate_off_the_allowlist_is_a_permission_error() -> None:
    status_line, _, body = _golden("puppetdb-allowlist-refused.txt").decode().partition("\n")
    assert status_line == "HTTP 403"
    with (
        _client({"/pdb/query/v4/facts": httpx.Response(403, text=body)}) as pe,
        pytest.raises(ApiError) as raised,
    ):
        pe.fact("linux.vm", FACT)
    assert raised.value.status == 403 and "permission denied" in str(raised.value)
