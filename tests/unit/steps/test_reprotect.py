"""Reprotect's actions act only when needed: the lost VM cleared only when it still holds the old
primary (and `confirm` names it), its certificate signed only when the new CA has not."""

from __future__ import annotations

import pytest

from pe_dr.errors import CommandFailed, PreconditionError
from pe_dr.lab.spec import LabSpec
from pe_dr.steps import reprotect

from ..fake_lab import FakeLab
from ..fakes import Reply, Vagrant

NEW_PRIMARY, LOST = "replica.vm", "primary.vm"
SERVER_LIST = ["puppet", "config", "print", "server_list", "--section", "agent"]
AGENT_RUN = ["puppet", "agent", "-t"]
SIGN = ["puppetserver", "ca", "sign", "--certname", LOST]
UNSIGNED = (
    "Error: Could not request certificate: Couldn't fetch certificate from CA server; you might "
    "still need to sign this agent's certificate (primary.vm). Exiting now because the "
    "waitforcert setting is set to 0.\n"
)


@pytest.fixture
def promoted(lab: FakeLab) -> FakeLab:
    """The lab with its roles swapped, as the root run hands it to reprotect."""
    swapped = FakeLab(LabSpec().with_primary(NEW_PRIMARY))
    swapped.vagrant.states[LOST] = "not_created"
    return swapped


def test_a_destroyed_vm_needs_nothing_cleared(promoted: FakeLab) -> None:
    assert reprotect.ensure_lost_vm_cleared(promoted, []) == "not created"
    assert promoted.mutations() == []


def test_a_vm_already_rebuilt_as_an_agent_of_the_new_primary_is_kept(promoted: FakeLab) -> None:
    promoted.vagrant.states[LOST] = "running"
    promoted.hosts[LOST].on(SERVER_LIST, stdout="replica.vm:8140\n")
    assert reprotect.ensure_lost_vm_cleared(promoted, []) == "already an agent of replica.vm"
    assert promoted.vagrant.mutations() == []


def test_a_vm_that_still_holds_the_old_primary_is_destroyed_only_when_confirmed(
    promoted: FakeLab,
) -> None:
    promoted.vagrant.states[LOST] = "poweroff"
    with pytest.raises(PreconditionError, match=r"refusing to destroy primary\.vm"):
        reprotect.ensure_lost_vm_cleared(promoted, [NEW_PRIMARY])
    assert promoted.vagrant.mutations() == []
    assert reprotect.ensure_lost_vm_cleared(promoted, [LOST]) == "destroyed"
    assert promoted.vagrant.mutations() == [Vagrant("destroy", (LOST,))]


def test_a_signed_agent_is_only_run(promoted: FakeLab) -> None:
    promoted.hosts[LOST].on(AGENT_RUN, exit_code=2)
    assert reprotect.ensure_agent_certificate(promoted, LOST) == "signed"
    assert promoted.hosts[NEW_PRIMARY].calls == []


def test_a_waiting_request_is_signed_by_the_new_primary_then_proven_by_a_run(
    promoted: FakeLab,
) -> None:
    promoted.hosts[LOST].on(AGENT_RUN, Reply(1, "", UNSIGNED), Reply(2, "", ""))
    promoted.hosts[NEW_PRIMARY].on(SIGN, stdout="Successfully signed certificate request\n")
    assert reprotect.ensure_agent_certificate(promoted, LOST) == "signed by replica.vm"
    assert promoted.hosts[NEW_PRIMARY].commands() == [SIGN]
    assert promoted.hosts[LOST].commands() == [AGENT_RUN, AGENT_RUN]


def test_an_agent_run_failing_for_another_reason_is_not_signed_away(promoted: FakeLab) -> None:
    promoted.hosts[LOST].on(AGENT_RUN, exit_code=1, stderr="Error: Could not run: disk full\n")
    with pytest.raises(CommandFailed, match="disk full"):
        reprotect.ensure_agent_certificate(promoted, LOST)
    assert promoted.hosts[NEW_PRIMARY].calls == []
