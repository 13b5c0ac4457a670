"""The drill's PuppetDB reads, unchanged, against a real PuppetDB pair (puppetdb_pair.py):
Debian 12's PuppetDB 7.12 for primary.vm and for replica.vm on one PostgreSQL cluster, both
puppetservers' termini broadcasting every command to both (`command_broadcast`, as PE configures
them after `enable replica`).

What runs is the product's own code: `pe_dr.steps.stores.PuppetDB.write` writes the marker fact on
linux.vm and runs the agent against the primary, then finds the run's report by hash in the
primary's PuppetDB; `pe_dr.steps.stores.PuppetDB.look` reads the fact, the report by hash and the
sync age from the replica the way the drill does during the outage: `Lab.pe_on(replica)`, i.e.
curl over SSH on replica.vm with replica.vm's host certificate.

What differs from PE: open-source PuppetDB has no HA sync (PE's pe-puppetdb-extensions), so the
replica holds the primary's data only because the terminus broadcast it, and PuppetDB reports no
sync age (its metric answers 404; the drill then says the age came from nowhere).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import puppetdb_pair as pdb
from realpuppet import CAPTURE_ENV, FIGURES, GOLDEN, RealPuppetLab, tier_marks

from pe_dr.errors import PeDrError
from pe_dr.lab.live import Lab
from pe_dr.steps.stores import (
    CERTIFICATE,
    FACT,
    TOKEN,
    Looking,
    Markers,
    Outage,
    PuppetDB,
    StoreMarker,
    StoreSeen,
    Writing,
    sync_age,
)

pytestmark = tier_marks()

AGENT = "linux.vm"
PRIMARY = "primary.vm"
REPLICA = "replica.vm"
POLL = 1.0
_WRITTEN: dict[str, StoreMarker] = {}  # the marker the first test wrote, for the outage tests


def _marker() -> str:
    return f"pe-dr-drill real-puppetdb {uuid.uuid4().hex[:12]}"


def _written(real_puppet: RealPuppetLab, lab: Lab) -> tuple[str, StoreMarker]:
    """The marker fact and its run's report, written through the primary (once per session)."""
    if not _WRITTEN:
        real_puppet.arrange()
        marker = _marker()
        started = time.monotonic()
        with lab.pe_on(PRIMARY) as on_primary:
            at = Writing(lab, on_primary, marker, AGENT, name="", description="", poll=POLL)
            mark = PuppetDB().write(at)
        FIGURES["puppetdb_marker_written_seconds"] = round(time.monotonic() - started, 1)
        assert not mark.unwritten, mark.unwritten
        _WRITTEN[marker] = mark
    marker, mark = next(iter(_WRITTEN.items()))
    return marker, mark


def _see(lab: Lab, marker: str, mark: StoreMarker, down_at: float) -> StoreSeen:
    markers = Markers(marker, AGENT, (mark,))
    outage = Outage(down_at, down_at, down_at, 1.0, {})
    with lab.pe_on(REPLICA) as on_replica:
        looking = Looking(lab, {CERTIFICATE: on_replica, TOKEN: None}, markers, outage, {})
        return PuppetDB().look(looking, mark)


def _capture(name: str, body: str, what: str) -> None:
    """With PE_DR_CAPTURE_GOLDEN=1: tests/golden/<name> and its .source."""
    if os.environ.get(CAPTURE_ENV) != "1":
        return
    path = GOLDEN / name
    path.write_text(body if body.endswith("\n") else body + "\n")
    path.with_name(name + ".source").write_text(
        "Real answer of Debian 12's PuppetDB 7.12.1 (packages puppetdb and "
        f"puppet-terminus-puppetdb): {what}.\n"
        "Captured by tests/real_puppet/test_real_puppetdb.py (PE_DR_CAPTURE_GOLDEN=1 "
        ".venv/bin/pytest -m real_puppet) in the real-Puppet lab: a PuppetDB each for primary.vm "
        "(127.0.50.4) and replica.vm (127.0.50.41) on one PostgreSQL 15 cluster, TLS on 8081 "
        "with the VMs' Puppet certificates and certificate-allowlist primary.vm, replica.vm; "
        "both puppetservers' termini with server_urls naming both and command_broadcast = true.\n"
        f"captured: {time.strftime('%Y-%m-%d', time.gmtime())}\n"
    )


def test_an_agent_run_through_the_primary_lands_in_both_puppetdbs(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    marker, mark = _written(real_puppet, lab)
    assert len(mark.ref) == 40 and mark.written_at is not None  # a report hash (SHA-1 hex)
    with lab.pe_on(PRIMARY) as on_primary:
        report = on_primary.report(mark.ref)
        assert report is not None and report["certname"] == AGENT
        assert report["producer"] == PRIMARY  # the primary compiled it and sent the report
        assert report["noop"] is True
    # the replica's PuppetDB has the fact and the report only by the terminus's broadcast
    # (open-source PuppetDB has no sync), read as the drill reads the replica
    with lab.pe_on(REPLICA) as on_replica:
        deadline = time.monotonic() + 60
        while not PuppetDB().serves(on_replica, mark, Markers(marker, AGENT, (mark,))):
            assert time.monotonic() < deadline, "the replica's PuppetDB never served the marker"
            time.sleep(POLL)
        assert [r["value"] for r in on_replica.fact(AGENT, FACT)] == [marker]
        # the same report, but for receive_time: each PuppetDB stamps its own
        copy = on_replica.report(mark.ref)
        assert copy is not None and copy["receive_time"] and report["receive_time"]
        assert {**copy, "receive_time": None} == {**report, "receive_time": None}
        # a hash no report has: no report, not an error
        assert on_replica.report("0" * 40) is None
        _capture(
            "puppetdb-facts.json",
            json.dumps(on_replica.fact(AGENT, FACT), indent=2),
            'GET /pdb/query/v4/facts?query=["and",["=","certname","linux.vm"],'
            '["=","name","pe_dr_marker"]] on replica.vm:8081, with the replica\'s certificate',
        )
        _capture(
            "puppetdb-report.json",
            json.dumps(report, indent=2),
            f'GET /pdb/query/v4/reports?query=["=","hash","{mark.ref}"] (one element of the '
            "answer): the marker run's report, `puppet agent -t --noop --server_list=primary.vm`",
        )


def test_puppetdb_allows_the_servers_certificates_and_refuses_the_agents(
    real_puppet: RealPuppetLab,
) -> None:
    real_puppet.arrange()
    replica = real_puppet.replica
    agent_ssl = real_puppet.agent_root / "lib" / "ssl"
    query = "/pdb/query/v4/nodes"
    for certname, ssldir in ((PRIMARY, real_puppet.primary.ssldir), (REPLICA, replica.ssldir)):
        answer = pdb.https_get(replica.address, REPLICA, query, ssldir, certname)
        assert answer is not None and answer[0] == 200, (certname, answer)
    refused = pdb.https_get(replica.address, REPLICA, query, agent_ssl, AGENT)
    assert refused is not None and refused[0] == 403, refused
    # the status API answers any certificate the CA signed (Debian's auth.conf), none without one
    status = pdb.https_get(replica.address, REPLICA, "/status/v1/simple", agent_ssl, AGENT)
    assert status == (200, b"running")
    assert pdb.https_get(replica.address, REPLICA, "/status/v1/simple", agent_ssl, None) is None
    _capture(
        "puppetdb-allowlist-refused.txt",
        f"HTTP {refused[0]}\n{refused[1].decode()}",
        "GET /pdb/query/v4/nodes on replica.vm:8081 with linux.vm's certificate, which is not in "
        "the certificate-allowlist: the status line and the body",
    )


def test_the_status_and_sync_reads_on_the_replica_as_real_puppetdb_answers(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    real_puppet.arrange()
    with lab.pe_on(REPLICA) as on_replica:
        services = on_replica.services(pdb.PORT)
        status = services["puppetdb-status"]
        assert status["state"] == "running"
        assert status["status"]["read_db_up?"] is True
        assert status["active_alerts"] == []
        assert on_replica.simple_status(pdb.PORT) == "running"
        # no sync in open-source PuppetDB: no "Last sync" alert, and the metric is not there
        assert on_replica.pdb_metric("seconds-since-last-successful-sync") is None
        assert sync_age(on_replica) == (None, "none")
        _capture(
            "puppetdb-status-services.json",
            json.dumps(services, indent=2),
            "GET /status/v1/services on replica.vm:8081 with the replica's certificate",
        )
    answer = pdb.https_get(
        real_puppet.replica.address,
        REPLICA,
        "/metrics/v2/read/puppetlabs.puppetdb.ha:name=seconds-since-last-successful-sync",
        real_puppet.replica.ssldir,
        REPLICA,
    )
    assert answer is not None
    _capture(
        "puppetdb-sync-metric-missing.json",
        json.dumps(json.loads(answer[1]), indent=2),
        f"HTTP {answer[0]}: GET /metrics/v2/read/puppetlabs.puppetdb.ha:name="
        "seconds-since-last-successful-sync on replica.vm:8081 (open-source PuppetDB has no HA "
        "sync, so no such metric)",
    )


@pytest.mark.parametrize("how", ["paused", "stopped"])
def test_the_drill_reads_the_marker_from_the_replica_while_the_primary_is_down(
    real_puppet: RealPuppetLab, lab: Lab, how: str
) -> None:
    """The primary's puppetserver and PuppetDB frozen (SIGSTOP: TCP accepted, nothing answered)
    or stopped; the drill's PuppetDB read of the replica answers by the host certificate."""
    marker, mark = _written(real_puppet, lab)
    down_at = real_puppet.primary_outage(how)
    seen = _see(lab, marker, mark, down_at)
    assert seen.answered_by == CERTIFICATE, seen.paths
    assert seen.has_marker, seen
    assert seen.seen["fact"] == marker
    assert seen.seen["marker_report"] is True
    assert seen.seen["report_producer"] == PRIMARY
    assert seen.seen["sync_age_from"] == "none" and seen.sync_age is None
    assert seen.paths[TOKEN].startswith("not available")
    # the primary's PuppetDB does not answer: a frozen one accepts TCP and never completes TLS
    primary = real_puppet.primary
    assert (
        pdb.https_get(primary.address, PRIMARY, "/status/v1/simple", primary.ssldir, PRIMARY)
        is None
    )
    if how == "stopped":
        with lab.pe_on(PRIMARY) as on_primary, pytest.raises(PeDrError):
            on_primary.fact(AGENT, FACT)


def test_a_marker_the_replica_never_received_is_not_served(
    real_puppet: RealPuppetLab, lab: Lab
) -> None:
    """The same read with a marker no agent sent and a report hash no run produced: the drill
    says the replica does not serve it (the check can fail)."""
    _, mark = _written(real_puppet, lab)
    unsent = StoreMarker("puppetdb", ref="f" * 40, written_at=mark.written_at)
    seen = _see(lab, _marker(), unsent, time.time())
    assert seen.answered_by == CERTIFICATE
    assert not seen.has_marker
    assert seen.seen["marker_report"] is False
