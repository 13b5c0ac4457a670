"""Replica actions act only when needed (tutorial 03-failover-dr, steps 3 to 5): provision and
enable the replica, copy the secret keys, push the replica to the agents' configuration."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from pe_dr.errors import CommandFailed, TransientError
from pe_dr.lab import paths
from pe_dr.lab.spec import HostSpec, LabSpec, Role
from pe_dr.steps import replica as replica_steps

from ..fake_lab import FakeLab
from ..fakes import (
    FakeClock,
    FakeHost,
    Http,
    Put,
    Reply,
    Run,
    infra_status,
    sha256sum,
    stat_mode_owner,
)

PRIMARY, REPLICA, AGENT = "primary.vm", "replica.vm", "linux.vm"
ADMIN_TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
GROUPS = "https://primary.vm:4433/classifier-api/v1/groups"
STATUS = ["puppet", "infrastructure", "status", "--format=json"]
# the non-interactive forms of pe-dr-interfaces §2.2 (mono topology, admin token file, no colour)
FLAGS = ["--topology", "mono", "--yes", "--token-file", paths.ADMIN_TOKEN, "--color", "false"]
PROVISION = ["puppet", "infrastructure", "provision", "replica", REPLICA, "--enable", *FLAGS]
ENABLE = ["puppet", "infrastructure", "enable", "replica", REPLICA, *FLAGS]


@pytest.fixture(autouse=True)
def admin_token(lab: FakeLab) -> None:
    lab.primary.write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n", mode=0o600)


def _groups(enabled: list[str] | None) -> httpx.Response:
    params = {} if enabled is None else {"ha_enabled_replicas": enabled}
    return httpx.Response(
        200,
        json=[{"id": "c3", "name": "PE Infrastructure", "classes": {"puppet_enterprise": params}}],
    )


def infrastructure_group(
    lab: FakeLab, enabled: list[str] | None, *, after: list[str] | None = None
) -> None:
    """PE Infrastructure's `ha_enabled_replicas`: `enabled` first, then `after` (what PE records
    once `enable` ran; the replica by default)."""
    later = [REPLICA] if after is None else after
    lab.http.on("GET", GROUPS, _groups(enabled), _groups(later))


PRIMARY_ONLY = infra_status(("puppetserver", PRIMARY, "running"), ("puppetdb", PRIMARY, "running"))


def with_replica(state: str) -> str:
    return infra_status(
        ("puppetserver", PRIMARY, "running"),
        ("puppetserver", REPLICA, "running"),
        ("puppetdb", REPLICA, state),
    )


# --- ensure_replica_enabled ----------------------------------------------------------------------


def test_replica_pe_lists_as_enabled_is_left_alone(lab: FakeLab) -> None:
    infrastructure_group(lab, [REPLICA], after=[])
    assert replica_steps.ensure_replica_enabled(lab) == "already enabled"
    assert lab.http.requests == [Http("GET", GROUPS)]
    assert lab.primary.calls == []
    assert lab.mutations() == []


@pytest.mark.parametrize("enabled", [None, [], ["other-replica.vm"]])
def test_replica_not_provisioned_is_provisioned_and_enabled_in_one_command(
    lab: FakeLab, enabled: list[str] | None
) -> None:
    infrastructure_group(lab, enabled)
    lab.primary.on(STATUS, stdout=PRIMARY_ONLY)
    lab.primary.on(PROVISION)
    assert replica_steps.ensure_replica_enabled(lab) == "provisioned and enabled"
    assert lab.primary.calls == [Run(STATUS, root=True), Run(PROVISION, root=True)]
    assert lab.primary.calls[0].ok_codes == (0, 1), "status exits 1 while a service is down"
    assert lab.http.requests == [Http("GET", GROUPS), Http("GET", GROUPS)], "PE's record read back"


def test_an_enable_that_exits_0_without_pe_recording_the_replica_is_not_done(
    lab: FakeLab,
) -> None:
    """Exit 0 is not proof (peadm PR #258: provision reports one thing, the replica another):
    PE's own `ha_enabled_replicas` must list the replica afterwards."""
    infrastructure_group(lab, None, after=[])
    lab.primary.on(STATUS, stdout=PRIMARY_ONLY)
    lab.primary.on(PROVISION)
    with pytest.raises(TransientError, match="ha_enabled_replicas"):
        replica_steps.ensure_replica_enabled(lab)


def test_provision_that_lost_the_race_with_puppetdb_is_finished_with_enable(lab: FakeLab) -> None:
    """PE's known race: provisioned, then enable saw PuppetDB starting (pe-dr-interfaces §0)."""
    infrastructure_group(lab, None)
    lab.primary.on(
        STATUS,
        Reply(0, PRIMARY_ONLY),
        Reply(1, with_replica("starting")),  # provision's own check: the replica is there
        Reply(1, with_replica("starting")),  # the wait's first look
        Reply(0, with_replica("running")),
    )
    lab.primary.on(PROVISION, exit_code=1, stderr="Error: PuppetDB on replica.vm is starting\n")
    lab.primary.on(ENABLE)
    assert replica_steps.ensure_replica_enabled(lab) == "enabled"
    assert lab.primary.commands() == [STATUS, PROVISION, STATUS, STATUS, STATUS, ENABLE]


def test_provision_that_failed_before_provisioning_raises_without_enable(lab: FakeLab) -> None:
    infrastructure_group(lab, None)
    lab.primary.on(STATUS, stdout=PRIMARY_ONLY)
    lab.primary.on(PROVISION, exit_code=1, stderr="Error: replica.vm has no signed certificate\n")
    with pytest.raises(CommandFailed, match="no signed certificate"):
        replica_steps.ensure_replica_enabled(lab)
    assert ENABLE not in lab.primary.commands()


def test_replica_provisioned_earlier_is_only_enabled(lab: FakeLab) -> None:
    infrastructure_group(lab, None)
    lab.primary.on(STATUS, stdout=with_replica("running"))
    lab.primary.on(ENABLE)
    assert replica_steps.ensure_replica_enabled(lab) == "enabled"
    assert lab.primary.commands() == [STATUS, STATUS, ENABLE]


def test_replica_whose_services_never_run_is_not_enabled(lab: FakeLab) -> None:
    infrastructure_group(lab, None)
    lab.primary.on(STATUS, stdout=with_replica("unreachable"))
    with pytest.raises(TransientError, match=r"services on replica\.vm to run"):
        replica_steps.ensure_replica_enabled(lab, wait_timeout=60)
    assert ENABLE not in lab.primary.commands()
    assert PROVISION not in lab.primary.commands()


# --- ensure_secret_keys_copied -------------------------------------------------------------------

KEY_FILES = [  # PE's three secret key files (PE docs, tutorial step 4) and the r10k key
    (
        "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json",
        0o640,
        "pe-orchestration-services",
    ),
    (
        "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
        0o640,
        "pe-orchestration-services",
    ),
    ("/etc/puppetlabs/console-services/conf.d/secrets/keys.json", 0o640, "pe-console-services"),
    ("/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa", 0o600, "pe-puppet"),
]


def content_of(path: str) -> bytes:
    return f'[{{"key":"secret-of-{path}","id":"0b6b2f4e"}}]'.encode()


def _keys(lab: FakeLab) -> FakeHost:
    for path, mode, owner in KEY_FILES:
        lab.primary.write(path, content_of(path), mode=mode, owner=owner, group=owner)
        lab.replica.on(["sha256sum", path], sha256sum)
        lab.replica.on(["stat", "-c", "%a %U %G", path], stat_mode_owner)
    return lab.replica


def _copied(action: str) -> list[replica_steps.KeyCopy]:
    return [
        replica_steps.KeyCopy(path, hashlib.sha256(content_of(path)).hexdigest()[:12], action)
        for path, _, _ in KEY_FILES
    ]


def test_keys_on_the_replica_with_pes_owners_are_not_copied_again(lab: FakeLab) -> None:
    replica = _keys(lab)
    for path, mode, owner in KEY_FILES:
        replica.write(path, content_of(path), mode=mode, owner=owner, group=owner)
    copies = replica_steps.ensure_secret_keys_copied(lab)
    assert copies == _copied("already in place")
    assert replica.puts() == []
    assert replica.commands() == [
        argv
        for path, _, _ in KEY_FILES
        for argv in (["sha256sum", path], ["stat", "-c", "%a %U %G", path])
    ]


def test_missing_keys_are_copied_by_sftp_with_pes_owner_and_mode_then_verified(
    lab: FakeLab,
) -> None:
    replica = _keys(lab)
    copies = replica_steps.ensure_secret_keys_copied(lab)
    assert copies == _copied("copied")
    assert replica.puts() == [
        Put(path, content_of(path), mode=mode, owner=owner, group=owner)
        for path, mode, owner in KEY_FILES
    ]
    first = KEY_FILES[0][0]
    # missing (no stat needed), copied, then checked: content and owner
    assert replica.calls[:4] == [
        Run(["sha256sum", first], root=True),
        Put(first, content_of(first), mode=0o640, owner=KEY_FILES[0][2], group=KEY_FILES[0][2]),
        Run(["sha256sum", first], root=True),
        Run(["stat", "-c", "%a %U %G", first], root=True),
    ]
    for path, _, _ in KEY_FILES:
        assert not any(content_of(path).decode() in line for line in lab.command_lines())


@pytest.mark.parametrize(
    ("mode", "owner", "content"),
    [
        (0o644, "root", None),  # copied by hand with cp: root's, world-readable
        (0o640, "pe-orchestration-services", b"[]"),  # PE's owner, another content
    ],
)
def test_key_with_other_content_or_owner_is_copied_again(
    lab: FakeLab, mode: int, owner: str, content: bytes | None
) -> None:
    replica = _keys(lab)
    for path, m, o in KEY_FILES:
        replica.write(path, content_of(path), mode=m, owner=o, group=o)
    first = KEY_FILES[0][0]
    replica.write(first, content or content_of(first), mode=mode, owner=owner, group=owner)
    copies = replica_steps.ensure_secret_keys_copied(lab)
    assert [c.action for c in copies] == ["copied"] + ["already in place"] * 3
    assert [p.path for p in replica.puts()] == [first]


def test_copy_that_does_not_land_is_transient(lab: FakeLab) -> None:
    replica = _keys(lab)
    first = KEY_FILES[0][0]
    replica.on(
        ["sha256sum", first],
        Reply(1, "", f"sha256sum: {first}: No such file or directory\n"),
        Reply(0, f"{'0' * 64}  {first}\n"),  # the replica holds something else after the copy
    )
    with pytest.raises(TransientError, match=r"does not match the primary's"):
        replica_steps.ensure_secret_keys_copied(lab)
    assert len(replica.puts()) == 1, "stops at the first key that did not land"


def test_copy_that_lands_with_another_owner_is_transient_naming_both(lab: FakeLab) -> None:
    replica = _keys(lab)
    first = KEY_FILES[0][0]
    replica.on(
        ["stat", "-c", "%a %U %G", first], Reply(0, "640 root root\n")
    )  # no such user on the replica: install kept root
    with pytest.raises(TransientError, match=r"640 root root.*640 pe-orchestration-services"):
        replica_steps.ensure_secret_keys_copied(lab)


def test_key_missing_on_the_primary_copies_nothing(lab: FakeLab) -> None:
    replica = _keys(lab)
    del lab.primary.files[KEY_FILES[0][0]]
    with pytest.raises(CommandFailed, match="No such file"):
        replica_steps.ensure_secret_keys_copied(lab)
    assert replica.calls == []


# --- ensure_agent_config_pushed ------------------------------------------------------------------

SERVER_LIST = ["puppet", "config", "print", "server_list", "--section", "agent"]
ORCHESTRATOR = "https://primary.vm:8143/orchestrator/v1"


def test_agents_that_know_the_replica_get_no_puppet_run(lab: FakeLab) -> None:
    lab.hosts[AGENT].on(SERVER_LIST, stdout="primary.vm:8140,replica.vm:8140\n")
    lists = replica_steps.ensure_agent_config_pushed(lab)
    assert lists == {AGENT: ["primary.vm:8140", "replica.vm:8140"]}
    assert lab.hosts[AGENT].calls == [Run(SERVER_LIST, root=True)]
    assert lab.http.requests == []


def _job(lab: FakeLab, *states: str, nodes: list[dict[str, str]] | None = None) -> None:
    lab.http.on(
        "POST",
        f"{ORCHESTRATOR}/command/deploy",
        json={"job": {"id": f"{ORCHESTRATOR}/jobs/81", "name": "81"}},
        status=202,
    )
    lab.http.on(
        "GET", f"{ORCHESTRATOR}/jobs/81", *(httpx.Response(200, json={"state": s}) for s in states)
    )
    items = nodes if nodes is not None else [{"name": AGENT, "state": "finished"}]
    lab.http.on("GET", f"{ORCHESTRATOR}/jobs/81/nodes", json={"items": items})


def test_agents_without_the_replica_get_an_orchestrator_run_on_all_nodes(lab: FakeLab) -> None:
    lab.hosts[AGENT].on(
        SERVER_LIST,
        Reply(0, "primary.vm:8140\n"),
        Reply(0, "primary.vm:8140,replica.vm:8140\n"),
    )
    _job(lab, "running", "running", "finished")
    lists = replica_steps.ensure_agent_config_pushed(lab, interval=2.0)
    assert lists == {AGENT: ["primary.vm:8140", "replica.vm:8140"]}, "read again after the run"
    deploy, *polls, nodes = lab.http.requests
    # tutorial step 5: puppet job run --no-enforce-environment --query 'nodes {...}'
    assert (deploy.method, deploy.url) == ("POST", f"{ORCHESTRATOR}/command/deploy")
    assert {k: v for k, v in deploy.body.items() if k != "description"} == {
        "environment": "",
        "enforce_environment": False,
        "noop": False,
        "scope": {"query": "nodes {deactivated is null and expired is null}"},
    }
    assert deploy.header("X-Authentication") == ADMIN_TOKEN
    assert [p.url for p in polls] == [f"{ORCHESTRATOR}/jobs/81"] * 3
    assert nodes.url == f"{ORCHESTRATOR}/jobs/81/nodes"
    assert lab.mutations() == [f"POST {ORCHESTRATOR}/command/deploy"]


def test_one_agent_without_the_replica_is_enough_to_push(lab: FakeLab) -> None:
    hosts = [*LabSpec().hosts, HostSpec(name="ubuntu.vm", role=Role.AGENT, address="192.168.50.9")]
    lab = FakeLab(LabSpec(hosts=hosts))
    lab.primary.write(paths.ADMIN_TOKEN, ADMIN_TOKEN + "\n")
    lab.hosts[AGENT].on(SERVER_LIST, stdout="primary.vm:8140,replica.vm:8140\n")
    lab.hosts["ubuntu.vm"].on(
        SERVER_LIST, Reply(0, "primary.vm:8140\n"), Reply(0, "primary.vm:8140,replica.vm\n")
    )
    _job(lab, "finished")
    lists = replica_steps.ensure_agent_config_pushed(lab)
    assert lists["ubuntu.vm"] == ["primary.vm:8140", "replica.vm"]
    assert [r.method for r in lab.http.mutations()] == ["POST"]
    assert not lab.unexpected


@pytest.mark.parametrize(
    ("state", "nodes", "named"),
    [
        ("failed", [{"name": AGENT, "state": "failed"}], "ended failed; nodes not finished: linux"),
        ("stopped", [], "ended stopped"),
        ("finished", [{"name": AGENT, "state": "skipped"}], "nodes not finished: linux.vm"),
    ],
)
def test_orchestrator_run_that_did_not_finish_everywhere_is_transient(
    lab: FakeLab, state: str, nodes: list[dict[str, str]], named: str
) -> None:
    lab.hosts[AGENT].on(SERVER_LIST, stdout="primary.vm:8140\n")
    _job(lab, state, nodes=nodes)
    with pytest.raises(TransientError, match=named):
        replica_steps.ensure_agent_config_pushed(lab)
    assert lab.hosts[AGENT].commands() == [SERVER_LIST], "not read again after a failed run"


def test_orchestrator_run_that_never_ends_times_out_naming_the_job(
    lab: FakeLab, clock: FakeClock
) -> None:
    lab.hosts[AGENT].on(SERVER_LIST, stdout="primary.vm:8140\n")
    _job(lab, "running")
    started = clock.now
    with pytest.raises(TransientError, match="orchestrator job 81"):
        replica_steps.ensure_agent_config_pushed(lab, timeout=60, interval=2)
    polls = [r for r in lab.http.requests if r.url == f"{ORCHESTRATOR}/jobs/81"]
    assert len(polls) > 1 and clock.now - started <= 60, "polled until the deadline, not past it"
    assert f"{ORCHESTRATOR}/jobs/81/nodes" not in [r.url for r in lab.http.requests]
