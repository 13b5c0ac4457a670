"""Promotion actions act only when needed and only when safe: promote the replica once the primary
is gone, point the client tools at the new primary, forget the old primary."""

from __future__ import annotations

import json
import shlex

import httpx
import pytest

from pe_dr.errors import CommandFailed, PreconditionError, TransientError
from pe_dr.lab import paths
from pe_dr.steps import promotion

from ..fake_lab import FakeLab
from ..fakes import Exists, Http, LabCall, Read, Reply, Run, refused

PRIMARY, REPLICA = "primary.vm", "replica.vm"
ADMIN_TOKEN = "replica-admin-token-4c1d9e"
SERVICES = "https://replica.vm:8140/status/v1/services"
# `promote replica` as peadm and the drill run it: no prompt, no token (pe-dr-interfaces §0, §8.9)
PROMOTE = shlex.split("puppet infrastructure promote replica --topology mono --yes --color false")
AS_REPLICA = {  # an enabled replica runs the file sync client, not the storage service
    "file-sync-client-service": {"state": "running"},
    "status-service": {"state": "running"},
}
AS_PRIMARY = {**AS_REPLICA, "file-sync-storage-service": {"state": "running"}}


def primary_gone(lab: FakeLab, state: str = "not_created", seen: str = "refused") -> None:
    lab.vagrant.states[PRIMARY] = state
    lab.on_probe(PRIMARY, seen)


# --- promote_replica -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "seen"),
    [
        ("running", "answering"),
        ("running", "refused"),  # its Puppet Server is down, the VM is not: not "permanently"
        ("poweroff", "answering"),  # halted here, yet something answers as primary.vm
        ("not_created", "answering"),
    ],
)
def test_promotion_is_refused_while_the_primary_runs_or_answers(
    lab: FakeLab, state: str, seen: str
) -> None:
    primary_gone(lab, state, seen)
    with pytest.raises(PreconditionError) as caught:
        promotion.promote_replica(lab)
    assert state in caught.value.message and seen in caught.value.message
    assert "permanently offline" in caught.value.message
    assert lab.replica.calls == []
    assert lab.http.requests == [], "not even asked whether the replica is already primary"


def test_replica_already_serving_as_primary_is_not_promoted_again(lab: FakeLab) -> None:
    primary_gone(lab)
    lab.http.on("GET", SERVICES, json=AS_PRIMARY)
    assert promotion.promote_replica(lab) == "already promoted"
    assert lab.replica.calls == []
    assert lab.http.requests == [Http("GET", SERVICES)]
    assert lab.http.requests[0].header("X-Authentication") is None
    assert lab.mutations() == []


@pytest.mark.parametrize(
    ("state", "seen"),
    [
        ("not_created", "refused"),  # the tutorial: vagrant destroy primary.vm
        ("poweroff", "refused"),
        ("poweroff", "unreachable"),
        ("aborted", "hung"),
        ("poweroff", "silent"),
    ],
)
def test_replica_is_promoted_once_the_primary_is_gone(lab: FakeLab, state: str, seen: str) -> None:
    primary_gone(lab, state, seen)
    lab.http.on(
        "GET", SERVICES, httpx.Response(200, json=AS_REPLICA), httpx.Response(200, json=AS_PRIMARY)
    )
    lab.replica.on(PROMOTE)
    assert promotion.promote_replica(lab) == "promoted"
    assert lab.timeline() == [
        f"vagrant state {PRIMARY}",
        f"lab probe_puppetserver {PRIMARY} 8140",
        f"lab pe {REPLICA} None",
        f"GET {SERVICES}",
        f"{REPLICA}: {' '.join(PROMOTE)}",
        f"lab pe {REPLICA} None",
        f"GET {SERVICES}",
    ]
    assert lab.replica.calls == [Run(PROMOTE, root=True)]


def test_replica_whose_puppet_server_does_not_answer_yet_counts_as_not_promoted(
    lab: FakeLab,
) -> None:
    primary_gone(lab)
    lab.http.on("GET", SERVICES, refused(SERVICES), httpx.Response(200, json=AS_PRIMARY))
    lab.replica.on(PROMOTE)
    assert promotion.promote_replica(lab) == "promoted"
    assert lab.replica.commands() == [PROMOTE]


@pytest.mark.parametrize(
    "after",
    [
        httpx.Response(200, json=AS_REPLICA),
        httpx.Response(200, json={**AS_REPLICA, "file-sync-storage-service": {"state": "error"}}),
        httpx.Response(503, json={"file-sync-storage-service": {"state": "starting"}}),
    ],
)
def test_promotion_that_leaves_the_replica_a_replica_is_transient(
    lab: FakeLab, after: httpx.Response
) -> None:
    primary_gone(lab)
    lab.http.on("GET", SERVICES, httpx.Response(200, json=AS_REPLICA), after)
    lab.replica.on(PROMOTE)
    with pytest.raises(TransientError, match=r"replica\.vm does not serve as primary"):
        promotion.promote_replica(lab)


def test_failed_promote_command_raises(lab: FakeLab) -> None:
    primary_gone(lab)
    lab.http.on("GET", SERVICES, json=AS_REPLICA)
    lab.replica.on(PROMOTE, exit_code=1, stderr="Error: Unable to reach PuppetDB\n")
    with pytest.raises(CommandFailed, match="Unable to reach PuppetDB"):
        promotion.promote_replica(lab)


# --- ensure_client_tools_point_at ----------------------------------------------------------------

TOOLS = "/etc/puppetlabs/client-tools"
CACERT = "/etc/puppetlabs/puppet/ssl/certs/ca.pem"


def client_tools(server: str) -> dict[str, dict[str, object]]:
    """PE's global client-tools configuration naming `server` (RBAC 4433, Code Manager 8170,
    orchestrator 8143; help.puppet.com "Configuring and using PE client tools")."""
    return {
        f"{TOOLS}/puppet-access.conf": {
            "service-url": f"https://{server}:4433/rbac-api",
            "certificate-file": CACERT,
        },
        f"{TOOLS}/puppet-code.conf": {
            "service-url": f"https://{server}:8170/code-manager",
            "cacert": CACERT,
        },
        f"{TOOLS}/orchestrator.conf": {
            "options": {"service-url": f"https://{server}:8143", "cacert": CACERT}
        },
    }


def _tools(lab: FakeLab, server: str) -> None:
    for path, data in client_tools(server).items():
        lab.replica.write(path, json.dumps(data, indent=2) + "\n")


AGENT_RUN = ["puppet", "agent", "-t"]


def _rewrite_on_puppet_run(server: str) -> Reply:
    """A Puppet run on the promoted server: PE's controller profile writes its client tools."""

    def effect(host: object) -> None:
        _tools_on(host, server)

    return Reply(2, "Notice: Applied catalog in 9.1 seconds\n", "", effect)


def _tools_on(host: object, server: str) -> None:
    for path, data in client_tools(server).items():
        host.write(path, json.dumps(data, indent=2) + "\n")  # type: ignore[attr-defined]


def test_client_tools_naming_the_server_are_only_read(lab: FakeLab) -> None:
    _tools(lab, REPLICA)
    named = promotion.ensure_client_tools_point_at(lab, REPLICA)
    assert set(named) == set(client_tools(REPLICA))
    assert lab.replica.calls == [
        call for path in client_tools(REPLICA) for call in (Exists(path, True), Read(path, True))
    ]


def test_client_tools_naming_the_old_primary_are_rewritten_by_a_puppet_run_never_by_hand(
    lab: FakeLab,
) -> None:
    _tools(lab, PRIMARY)
    lab.replica.on(AGENT_RUN, _rewrite_on_puppet_run(REPLICA))
    named = promotion.ensure_client_tools_point_at(lab, REPLICA)
    assert named[f"{TOOLS}/puppet-code.conf"] == "https://replica.vm:8170/code-manager"
    assert lab.replica.puts() == [], "PE manages these files: the drill never writes them"
    assert [c.argv for c in lab.replica.calls if isinstance(c, Run)] == [AGENT_RUN]


def test_client_tools_still_wrong_after_the_puppet_run_fail_naming_them(lab: FakeLab) -> None:
    _tools(lab, PRIMARY)
    lab.replica.on(AGENT_RUN, exit_code=0)
    with pytest.raises(TransientError) as caught:
        promotion.ensure_client_tools_point_at(lab, REPLICA)
    assert "puppet-code.conf names https://primary.vm:8170/code-manager" in caught.value.message
    assert lab.replica.puts() == []


def test_missing_or_garbled_client_tools_count_as_wrong(lab: FakeLab) -> None:
    lab.replica.write(f"{TOOLS}/puppet-access.conf", "service-url: https://primary.vm:4433\n")
    assert promotion.client_tools_naming(lab, REPLICA) == {
        f"{TOOLS}/puppet-access.conf": "(not JSON)",
        f"{TOOLS}/puppet-code.conf": "(missing)",
        f"{TOOLS}/orchestrator.conf": "(missing)",
    }


# --- forget_old_primary --------------------------------------------------------------------------

NODES = "https://replica.vm:8081/pdb/query/v4/nodes"
# documented without --token-file: the admin token goes where PE looks (PE manual p.270, p.281)
FORGET = ["puppet", "infrastructure", "forget", PRIMARY]
PURGE = ["puppet", "node", "purge", PRIMARY]
ACTIVE = {"certname": PRIMARY, "deactivated": None, "expired": None}
QUERY = {"query": json.dumps(["=", "certname", PRIMARY])}


@pytest.fixture
def new_primary(lab: FakeLab) -> FakeLab:
    lab.replica.write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)
    return lab


@pytest.mark.parametrize(
    "nodes",
    [
        [],
        [{**ACTIVE, "deactivated": "2026-03-01T10:00:00.000Z"}],
        [{**ACTIVE, "expired": "2026-03-01T10:00:00.000Z"}],
        [{**ACTIVE, "certname": "linux.vm"}],
    ],
)
def test_old_primary_puppetdb_no_longer_lists_is_not_forgotten_again(
    new_primary: FakeLab, nodes: list[dict[str, object]]
) -> None:
    lab = new_primary
    lab.http.on("GET", NODES, json=nodes)
    assert promotion.forget_old_primary(lab) == "already forgotten"
    assert lab.http.requests == [Http("GET", NODES, params=QUERY)]
    assert lab.http.requests[0].header("X-Authentication") == ADMIN_TOKEN
    assert lab.lab_calls("pe") == [LabCall("pe", (REPLICA, paths.ADMIN_TOKEN))]
    assert lab.replica.calls == []


def test_old_primary_is_forgotten_with_the_token_in_its_default_place(
    new_primary: FakeLab,
) -> None:
    lab = new_primary
    lab.http.on("GET", NODES, httpx.Response(200, json=[ACTIVE]), httpx.Response(200, json=[]))
    lab.replica.on(FORGET)
    assert promotion.forget_old_primary(lab) == "forgotten"
    put = lab.replica.puts()
    assert [(p.path, p.content, p.mode) for p in put] == [
        ("/root/.puppetlabs/token", ADMIN_TOKEN.encode(), 0o600)
    ]
    assert [c.argv for c in lab.replica.calls if isinstance(c, Run)] == [FORGET]
    assert all("--token-file" not in c for c in lab.replica.commands())
    assert lab.primary.calls == []


@pytest.mark.parametrize(
    "stderr",
    ["Error: Unknown option '--token-file'\n", "Error: The token has expired\n"],
)
def test_a_failed_forget_falls_back_to_node_purge_judged_by_puppetdb(
    new_primary: FakeLab, stderr: str
) -> None:
    lab = new_primary
    lab.http.on("GET", NODES, httpx.Response(200, json=[ACTIVE]), httpx.Response(200, json=[]))
    lab.replica.on(FORGET, Reply(1, "", stderr))
    lab.replica.on(PURGE)
    outcome = promotion.forget_old_primary(lab)
    assert outcome.startswith("purged (forget failed:") and stderr.strip() in outcome
    assert [c.argv for c in lab.replica.calls if isinstance(c, Run)] == [FORGET, PURGE]


def test_a_failed_purge_after_a_failed_forget_raises(new_primary: FakeLab) -> None:
    lab = new_primary
    lab.http.on("GET", NODES, json=[ACTIVE])
    lab.replica.on(FORGET, exit_code=1, stderr="Error: The token has expired\n")
    lab.replica.on(PURGE, exit_code=1, stderr="Error: Could not find a certificate\n")
    with pytest.raises(CommandFailed, match="Could not find a certificate"):
        promotion.forget_old_primary(lab)


def test_forget_that_leaves_the_node_active_is_transient(new_primary: FakeLab) -> None:
    lab = new_primary
    lab.http.on("GET", NODES, json=[ACTIVE])
    lab.replica.on(FORGET)
    with pytest.raises(TransientError, match=r"primary\.vm is still active in PuppetDB on replica"):
        promotion.forget_old_primary(lab)
