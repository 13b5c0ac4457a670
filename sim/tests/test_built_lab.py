"""Faults added to a built lab, and PE's strictness (moved out of test_labsim.py)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from driver import Driver, labsim, ops, refused

from labsim.testing import running_lab

# -- faults added to a built lab, and PE's strictness ----------------------------------------------

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A lab with Code Manager and an enabled replica, built once for the tests below."""
    with running_lab(tmp_path_factory.mktemp("built") / "lab") as h:
        drv = Driver(h)
        drv.up_all()
        drv.setup_code_manager()
        rc, _, err = drv.provision()
        assert rc == 0, err
        assert drv.ssh("linux.vm", ["puppet", "agent", "-t"])[0] in (0, 2)
        yield h, drv


PUPPETFILE = "/etc/puppetlabs/code/environments/production/Puppetfile"


def _replica_has(drv: Driver, marker: str) -> bool:
    return marker in drv.ssh("replica.vm", ["cat", PUPPETFILE])[1]


@pytest.mark.slow
def test_a_fault_naming_a_vm_the_lab_lacks_isrefused(built: Any) -> None:
    h, _ = built
    proc = labsim("fault", "add", "halt:hang=nope.vm", "--state", str(h.state_dir))
    assert proc.returncode == 2
    assert "nope.vm" in proc.stderr and "primary.vm, replica.vm" in proc.stderr
    listed = labsim("--state", str(h.state_dir), "fault", "list")
    assert listed.returncode == 0 and listed.stdout == ""


@pytest.mark.slow
def test_failover_broken_added_to_a_built_lab_takes_the_replica_out_of_server_list(
    built: Any,
) -> None:
    h, drv = built
    both = ["primary.vm:8140", "replica.vm:8140"]
    assert drv.agent_server_list() == both
    h.fault_add("failover:broken")
    try:
        assert drv.agent_server_list() == ["primary.vm:8140"]
        assert drv.agent_server_list("PE Infrastructure Agent") == ["primary.vm:8140"]
    finally:
        h.fault_clear()
    assert drv.agent_server_list() == both


@pytest.mark.slow
def test_replication_lag_delays_every_deploy_and_keeps_their_order(built: Any) -> None:
    h, drv = built
    h.fault_add("replication:lag=1.5")
    try:
        t0 = time.monotonic()
        drv.commit_and_push("ordered-1")
        if time.monotonic() - t0 < 1.4:  # (a busy machine may take longer to push)
            assert not _replica_has(drv, "ordered-1"), "it arrived before the lag"
        h.fault_clear()
        h.fault_add("replication:lag=60")
        drv.commit_and_push("ordered-2")
        # a recovered replica fetches what is pending at once: the lag is its state now, not a
        # delay fixed when the deploy was queued (a slow drill must not stall the next one)
        h.fault_clear()
        drv.wait_for("the later commit", lambda: _replica_has(drv, "ordered-2"), timeout=15)
        syncs = [e["detail"] for e in ops(h.journal(), "filesync", "replica.vm")]
        first = next(i for i, d in enumerate(syncs) if d.endswith(drv.last_commit("ordered-1")))
        second = next(i for i, d in enumerate(syncs) if d.endswith(drv.last_commit("ordered-2")))
        assert first < second, "a later deploy never overtakes an earlier one"
    finally:
        h.fault_clear()


@pytest.mark.slow
def test_db_replication_inactive_is_error_alerts_on_running_services(built: Any) -> None:
    h, drv = built
    h.fault_add("replica:db-replication-inactive")
    try:
        st = json.loads(
            drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"])
        )
        assert all(e["state"] == "running" for e in st)
        alerts = {a["message"] for e in st if e["server"] == "primary.vm" for a in e["alerts"]}
        assert "Database replication for Classifier is inactive" in alerts
        classifier = next(e for e in st if e["service"] == "classifier-service")
        assert classifier["status"]["replication"] == {"mode": "source", "status": "inactive"}
    finally:
        h.fault_clear()
    st = json.loads(drv.ok("primary.vm", ["puppet", "infrastructure", "status", "--format=json"]))
    assert not [a for e in st for a in e["alerts"]]


@pytest.mark.slow
def test_agent_output_is_the_real_agents_and_a_failing_fact_still_applies(built: Any) -> None:
    h, drv = built
    rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
    assert rc == 0
    assert "\x1b[0;32mInfo: Applying configuration version 'primary-production-" in out
    assert "Warning" not in out and "Error" not in out
    h.fault_add("agent:fact-error")
    try:
        rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
    finally:
        h.fault_clear()
    assert rc == 0, err
    assert "\x1b[1;31mError: Facter: Error while resolving custom fact fact='pe_dr_broken'" in err
    assert "Applying configuration version 'primary-production-" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "warning"),
    [
        (None, "(Connection refused - connect(2) for "),
        ("halt:hang=primary.vm", "timed out connect operation after 1"),
        ("halt:unreachable=primary.vm", "(No route to host - connect(2) for "),
    ],
)
def test_a_halted_primary_refuses_hangs_or_is_unreachable(
    built: Any, fault: str | None, warning: str
) -> None:
    h, drv = built
    if fault:
        h.fault_add(fault)
    drv.vagrant("halt", "primary.vm")
    try:
        address = drv.addr["primary.vm"]
        if fault == "halt:hang=primary.vm":
            with socket.create_connection((address, 8140), timeout=2) as sock:
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):  # accepted, and silent
                    sock.recv(1)
        else:
            assert refused(address, 8140)
        rc, out, err = drv.ssh("linux.vm", ["puppet", "agent", "-t", "--noop"])
        assert rc == 0, err
        assert "Warning: Unable to connect to server from server_list setting" in err
        assert warning in err and "Trying with next server from server_list." in err
        assert "Applying configuration version 'replica-production-" in out
    finally:
        h.fault_clear()
        drv.vagrant("up", "primary.vm")
    assert not refused(drv.addr["primary.vm"], 8140)


@pytest.mark.slow
def test_a_metric_puppetdb_lacks_is_answered_as_jolokia_answers_it(built: Any) -> None:
    """Real PuppetDB (tests/golden/puppetdb-sync-metric-missing.json, Debian's 7.12): HTTP 200,
    the error in the body with `"status": 404` and Jolokia's error type."""
    _, drv = built
    golden = json.loads((GOLDEN / "puppetdb-sync-metric-missing.json").read_text())
    r = drv.http(
        "replica.vm",
        8081,
        "GET",
        "/metrics/v2/read/puppetlabs.puppetdb.ha:name=no-such-metric",
        cert="replica.vm",
    )
    assert r.status_code == 200
    assert set(r.json()) == set(golden) and r.json()["status"] == 404
    assert r.json()["error_type"] == golden["error_type"]
    assert r.json()["request"]["mbean"] == "puppetlabs.puppetdb.ha:name=no-such-metric"


@pytest.mark.slow
def test_pe_refuses_what_pe_refuses(built: Any) -> None:
    _, drv = built
    # the classifier: a class parameter the class does not have is 422 missing-referents
    groups = drv.http(
        "primary.vm", 4433, "GET", "/classifier-api/v1/groups", token=drv.admin_token
    ).json()
    master = next(g for g in groups if g["name"] == "PE Master")
    r = drv.http(
        "primary.vm",
        4433,
        "POST",
        f"/classifier-api/v1/groups/{master['id']}",
        token=drv.admin_token,
        json_body={"classes": {"puppet_enterprise::profile::master": {"r10k_nope": True}}},
    )
    assert r.status_code == 422 and r.json()["kind"] == "missing-referents"
    assert r.json()["details"][0]["missing"] == "r10k_nope"
    # RBAC token validation: 400 malformed, 403 unknown, 200 valid
    auth = "/rbac-api/v2/auth/token/authenticate"
    assert drv.http("primary.vm", 4433, "POST", auth, json_body={"token": "x y"}).status_code == 400
    unknown = {"token": "0" + "a" * 40}
    assert drv.http("primary.vm", 4433, "POST", auth, json_body=unknown).status_code == 403
    valid = {"token": drv.admin_token}
    assert drv.http("primary.vm", 4433, "POST", auth, json_body=valid).status_code == 200
    # forget is documented without --token-file (labsim refuses it: the stricter answer), takes
    # the admin token from its default place, and fails on a node PE does not know
    forget = ["puppet", "infrastructure", "forget", "stranger.vm"]
    rc, _, err = drv.ssh("primary.vm", [*forget, "--token-file", "/root/.puppetlabs/admin_token"])
    assert rc == 1 and "Unknown option '--token-file'" in err
    assert drv.admin_token
    drv.put("primary.vm", "/root/.puppetlabs/token", drv.admin_token)
    rc, _, err = drv.ssh("primary.vm", forget)
    assert rc == 1 and "not a known node" in err
    # puppet-code's global options go before the action
    late = ["puppet-code", "deploy", "production", "--token-file", "/root/.puppetlabs/token"]
    rc, _, err = drv.ssh("primary.vm", late)
    assert rc == 1 and "global options go before the action" in err


@pytest.mark.slow
def test_every_vagrant_invocation_and_ssh_connection_is_journaled(built: Any) -> None:
    """`make bench` counts them: on a real lab each `vagrant` call costs Ruby's start-up."""
    h, drv = built
    before = len(h.journal())
    drv.vagrant("status")
    drv.vagrant("ssh-config", "linux.vm")
    calls = [e["detail"] for e in ops(h.journal()[before:], "vagrant.command")]
    assert calls == ["status", "ssh-config linux.vm"]
    before = len(h.journal())
    drv._client("linux.vm").close()  # a connection of its own (the driver keeps its others)
    assert len(ops(h.journal()[before:], "ssh.connect", "linux.vm")) == 1
    logins = ops(h.journal()[before:], "ssh.login", "linux.vm")
    assert [e["detail"] for e in logins] == ["vagrant"], "whose connection it was"
