"""The lab's roles are read from PE, not kept by the controller: which server runs file sync
storage is the primary; a promotion swaps the spec's roles; a lab mid-promotion is refused."""

from __future__ import annotations

import pytest

from pe_dr.errors import ConfigError
from pe_dr.lab import paths
from pe_dr.lab.spec import LabSpec, Role
from pe_dr.steps import lab_state

from ..fake_lab import FakeLab
from ..fakes import refused

PRIMARY, REPLICA = "primary.vm", "replica.vm"
TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
AS_REPLICA = {"file-sync-client-service": {"state": "running"}}
AS_PRIMARY = {**AS_REPLICA, "file-sync-storage-service": {"state": "running"}}


def services(server: str) -> str:
    return f"https://{server}:8140/status/v1/services"


def infrastructure(replicas: list[str]) -> list[dict[str, object]]:
    return [
        {
            "id": "i1",
            "name": "PE Infrastructure",
            "classes": {"puppet_enterprise": {"ha_enabled_replicas": replicas}},
        }
    ]


@pytest.fixture(autouse=True)
def pe_versions(lab: FakeLab) -> None:
    """Each PE server says which PE it runs (two versions, to tell which one was asked)."""
    lab.primary.on(["cat", lab_state.PE_VERSION_FILE], stdout="2025.8.0\n")
    lab.replica.on(["cat", lab_state.PE_VERSION_FILE], stdout="2023.8.1\n")


def test_the_pe_version_is_read_from_the_primary_pe_runs_now(lab: FakeLab) -> None:
    lab.http.on("GET", services(PRIMARY), json=AS_PRIMARY)
    assert lab_state.lab_roles(lab).pe_version == "2025.8.0"
    lab.primary.on(["cat", lab_state.PE_VERSION_FILE], exit_code=1, stderr="No such file")
    assert lab_state.lab_roles(lab).pe_version is None  # not PE (yet): nothing is claimed


def test_the_spec_can_swap_its_two_pe_servers() -> None:
    spec = LabSpec()
    swapped = spec.with_primary(REPLICA)
    assert (swapped.primary.name, swapped.replica.name) == (REPLICA, PRIMARY)
    assert swapped.host(PRIMARY).address == spec.host(PRIMARY).address
    assert [h.role for h in swapped.agents] == [Role.AGENT]
    assert swapped.with_primary(PRIMARY) == spec
    assert spec.with_primary(PRIMARY) is spec
    with pytest.raises(ConfigError, match="not one of lab"):
        spec.with_primary("linux.vm")


def test_a_lab_whose_built_primary_runs_file_sync_storage_is_as_built(lab: FakeLab) -> None:
    lab.http.on("GET", services(PRIMARY), json=AS_PRIMARY)
    roles = lab_state.lab_roles(lab)
    assert (roles.state, roles.spec) == (lab_state.AS_BUILT, lab.spec)
    assert roles.refusal("dr-drill") is None
    assert lab.mutations() == []


def test_a_promoted_and_reprotected_lab_is_swapped_and_drills_run_on_it(lab: FakeLab) -> None:
    lab.http.on("GET", services(PRIMARY), json=AS_REPLICA)
    lab.http.on("GET", services(REPLICA), json=AS_PRIMARY)
    lab.replica.write(paths.ADMIN_TOKEN, TOKEN + "\n")
    lab.http.on("GET", f"https://{REPLICA}:4433/classifier-api/v1/groups",
                json=infrastructure([PRIMARY]))  # fmt: skip
    roles = lab_state.lab_roles(lab)
    assert roles.state == lab_state.SWAPPED
    assert roles.pe_version == "2023.8.1"  # asked of the promoted server, the primary now
    assert (roles.spec.primary.name, roles.spec.replica.name) == (REPLICA, PRIMARY)
    assert roles.refusal("dr-drill") is None
    assert lab.mutations() == []


@pytest.mark.parametrize("old", ["not_created", "poweroff"])
def test_a_promoted_lab_not_yet_reprotected_refuses_drills_saying_to_reprotect(
    lab: FakeLab, old: str
) -> None:
    lab.vagrant.states[PRIMARY] = old
    lab.http.on("GET", services(REPLICA), json=AS_PRIMARY)
    roles = lab_state.lab_roles(lab)
    assert roles.state == lab_state.PROMOTED
    assert roles.spec.primary.name == REPLICA
    refusal = roles.refusal("dr-drill") or ""
    assert "replica.vm is PE's primary and primary.vm is not its replica yet" in refusal
    assert "pe-dr reprotect --yes" in refusal
    assert roles.refusal("failover-drill") == refusal
    assert roles.refusal("reprotect") is None and roles.refusal("teardown") is None


def test_a_lost_primary_whose_replica_was_not_promoted_refuses_all_but_the_promotion(
    lab: FakeLab,
) -> None:
    lab.vagrant.states[PRIMARY] = "not_created"
    lab.http.on("GET", services(REPLICA), json=AS_REPLICA)
    roles = lab_state.lab_roles(lab)
    assert roles.state == lab_state.PRIMARY_LOST
    assert "finish the promotion" in (roles.refusal("dr-drill") or "")
    assert "finish the promotion" in (roles.refusal("lab-setup") or ""), "never a new primary"
    assert roles.refusal("promotion") is None


def test_a_lab_not_built_yet_keeps_the_spec_roles(lab: FakeLab) -> None:
    for vm in lab.vagrant.states:
        lab.vagrant.states[vm] = "not_created"
    roles = lab_state.lab_roles(lab)
    assert (roles.state, roles.spec) == (lab_state.AS_BUILT, lab.spec)
    assert lab.http.requests == []


def test_a_halted_primary_with_an_unpromoted_replica_stays_as_built(lab: FakeLab) -> None:
    # a crash left the primary halted mid-failover: the drill starts it again, roles unchanged
    lab.vagrant.states[PRIMARY] = "poweroff"
    lab.http.on("GET", services(REPLICA), json=AS_REPLICA)
    roles = lab_state.lab_roles(lab)
    assert (roles.state, roles.spec.primary.name) == (lab_state.AS_BUILT, PRIMARY)


def test_servers_that_do_not_answer_keep_the_spec_roles(lab: FakeLab) -> None:
    lab.http.on("GET", services(PRIMARY), refused(services(PRIMARY)))
    lab.http.on("GET", services(REPLICA), refused(services(REPLICA)))
    roles = lab_state.lab_roles(lab)
    assert (roles.state, roles.spec) == (lab_state.AS_BUILT, lab.spec)
