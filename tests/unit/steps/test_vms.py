"""VM actions act only when needed: box fetch, vagrant up/halt/destroy, restoring the primary."""

from __future__ import annotations

import platform

import pytest

from pe_dr.errors import ConfigError, PreconditionError, TransientError, VagrantError
from pe_dr.lab import virtualbox
from pe_dr.steps import lab_state, vms

from ..fake_lab import FakeLab
from ..fakes import LabCall, Reply, Run, Vagrant

PRIMARY = "primary.vm"


def _virtualbox_refuses_lab_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """VirtualBox 7 on Linux without /etc/vbox/networks.conf: only 192.168.56.0/21 is allowed,
    and the tutorial's addresses are 192.168.50.x (real-world-findings §1 row 1)."""
    monkeypatch.setattr(virtualbox, "virtualbox_version", lambda: (7, 0, 14))
    monkeypatch.setattr(virtualbox, "_read_conf", lambda path: None)
    monkeypatch.setattr(platform, "system", lambda: "Linux")


# --- bring_up_order ----------------------------------------------------------------------------


def test_a_first_run_starts_the_primary_alone_then_every_other_vm(lab: FakeLab) -> None:
    # the primary's first `vagrant up` creates the host-only interface; parallel first runs
    # duplicate it (real-world-findings §4.2 row 9)
    for vm in lab.vagrant.states:
        lab.vagrant.states[vm] = "not_created"
    assert vms.bring_up_order(lab) == [[PRIMARY], ["gitlab.vm", "replica.vm", "linux.vm"]]


@pytest.mark.parametrize("created", ["primary.vm", "gitlab.vm"])
def test_once_a_vm_exists_the_primary_goes_with_gitlab(lab: FakeLab, created: str) -> None:
    for vm in lab.vagrant.states:
        lab.vagrant.states[vm] = "not_created"
    lab.vagrant.states[created] = "poweroff"
    assert vms.bring_up_order(lab) == [[PRIMARY, "gitlab.vm"], ["replica.vm", "linux.vm"]]
    assert lab.mutations() == []


# --- ensure_box --------------------------------------------------------------------------------


def test_box_is_not_looked_up_when_every_vm_exists(lab: FakeLab) -> None:
    assert vms.ensure_box(lab) == "no VM to create"
    assert lab.vagrant.calls == [Vagrant("status")]


def test_box_already_installed_is_not_added_again(lab: FakeLab) -> None:
    lab.vagrant.states["replica.vm"] = "not_created"
    lab.vagrant.installed = [("ubuntu/focal64", "virtualbox"), (lab.spec.box, "virtualbox")]
    assert vms.ensure_box(lab) == "present"
    assert lab.vagrant.calls == [Vagrant("status"), Vagrant("boxes")]


def test_missing_box_is_added_once_for_the_virtualbox_provider(lab: FakeLab) -> None:
    lab.vagrant.states["replica.vm"] = "not_created"
    lab.vagrant.installed = [("ubuntu/focal64", "virtualbox")]  # another box is not this one
    assert vms.ensure_box(lab) == "added"
    assert lab.vagrant.calls == [
        Vagrant("status"),
        Vagrant("boxes"),
        Vagrant("box_add", ("ubuntu/jammy64", "virtualbox")),
    ]


def test_box_added_meanwhile_by_another_run_counts_as_present(lab: FakeLab) -> None:
    lab.vagrant.states["replica.vm"] = "not_created"
    lab.vagrant.fail(
        "box_add",
        VagrantError(
            "`vagrant box add ubuntu/jammy64 --provider virtualbox` failed with exit code 1 "
            "after 2 s: The box you're attempting to add already exists."
        ),
    )
    assert vms.ensure_box(lab) == "present"


def test_box_add_failing_otherwise_raises(lab: FakeLab) -> None:
    lab.vagrant.states["replica.vm"] = "not_created"
    lab.vagrant.fail("box_add", VagrantError("`vagrant box add` failed: 404 Not Found"))
    with pytest.raises(VagrantError, match="404"):
        vms.ensure_box(lab)


def test_box_is_not_fetched_for_addresses_virtualbox_would_refuse(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    _virtualbox_refuses_lab_addresses(monkeypatch)
    lab.vagrant.states["replica.vm"] = "not_created"
    with pytest.raises(ConfigError, match=r"192\.168\.50\.4 \(primary\.vm\).*networks\.conf"):
        vms.ensure_box(lab)
    assert lab.vagrant.mutations() == []


# --- ensure_vm_up --------------------------------------------------------------------------------


def test_running_vm_that_answers_is_left_alone(lab: FakeLab) -> None:
    lab.primary.on(["true"])
    assert vms.ensure_vm_up(lab, PRIMARY) == "already running"
    assert lab.vagrant.calls == [Vagrant("state", (PRIMARY,))]
    assert lab.primary.calls == [Run(["true"])]
    assert lab.mutations() == []


def test_halted_vm_is_started_then_its_ssh_settings_renewed_then_waited_for(
    lab: FakeLab,
) -> None:
    lab.vagrant.states[PRIMARY] = "poweroff"
    lab.primary.on(["true"])
    assert vms.ensure_vm_up(lab, "primary") == "started"  # the short name is the VM
    assert lab.timeline() == [
        f"vagrant state {PRIMARY}",
        f"vagrant up {PRIMARY}",
        f"lab forget_host {PRIMARY}",
        f"{PRIMARY}: true",
    ]


def test_vm_that_does_not_answer_yet_is_polled_with_fresh_ssh_settings(lab: FakeLab) -> None:
    lab.vagrant.states[PRIMARY] = "not_created"
    lab.primary.on(
        ["true"],
        Reply(raises=TransientError("cannot reach primary.vm over SSH: connection refused")),
        Reply(raises=TransientError("cannot reach primary.vm over SSH: connection refused")),
        Reply(),
    )
    assert vms.ensure_vm_up(lab, PRIMARY) == "started"
    assert lab.primary.commands() == [["true"]] * 3
    # every failed probe drops the SSH handle, so the next one reads `vagrant ssh-config` again
    assert lab.lab_calls("forget_host") == [LabCall("forget_host", (PRIMARY,))] * 3


def test_vm_that_never_answers_over_ssh_times_out_naming_it(lab: FakeLab) -> None:
    lab.primary.on(["true"], Reply(raises=TransientError("cannot reach primary.vm over SSH")))
    with pytest.raises(TransientError, match=r"primary\.vm to answer over SSH"):
        vms.ensure_vm_up(lab, PRIMARY)
    assert len(lab.primary.commands()) > 1


def test_vm_is_not_started_on_addresses_virtualbox_would_refuse(
    lab: FakeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    _virtualbox_refuses_lab_addresses(monkeypatch)
    lab.vagrant.states[PRIMARY] = "not_created"
    with pytest.raises(ConfigError, match=r"networks\.conf"):
        vms.ensure_vm_up(lab, PRIMARY)
    assert lab.mutations() == []


# --- halt_vm / destroy_vm ------------------------------------------------------------------------


@pytest.mark.parametrize("action", [vms.halt_vm, vms.destroy_vm])
@pytest.mark.parametrize("confirm", [[], ["replica.vm"], ["primary"]])
def test_destructive_action_refuses_without_naming_the_vm(
    lab: FakeLab, action: object, confirm: list[str]
) -> None:
    with pytest.raises(PreconditionError, match=r"refusing to \w+ primary\.vm.*confirm"):
        action(lab, PRIMARY, confirm)  # type: ignore[operator]
    assert lab.journal == [], "not even vagrant status before the confirmation"


def test_running_vm_is_halted_after_its_ssh_handle_is_dropped(lab: FakeLab) -> None:
    vms.halt_vm(lab, "primary", [PRIMARY])
    assert lab.timeline() == [
        f"vagrant state {PRIMARY}",
        f"lab forget_host {PRIMARY}",
        f"vagrant halt {PRIMARY}",
    ]


@pytest.mark.parametrize("state", ["poweroff", "not_created", "aborted"])
def test_vm_that_does_not_run_is_not_halted(lab: FakeLab, state: str) -> None:
    lab.vagrant.states[PRIMARY] = state
    vms.halt_vm(lab, PRIMARY, [PRIMARY])
    assert lab.vagrant.calls == [Vagrant("state", (PRIMARY,))]
    assert lab.mutations() == []


@pytest.mark.parametrize("state", ["running", "poweroff", "aborted"])
def test_existing_vm_is_destroyed_after_its_ssh_handle_is_dropped(lab: FakeLab, state: str) -> None:
    lab.vagrant.states[PRIMARY] = state
    vms.destroy_vm(lab, PRIMARY, [PRIMARY])
    assert lab.timeline() == [
        f"vagrant state {PRIMARY}",
        f"lab forget_host {PRIMARY}",
        f"vagrant destroy {PRIMARY}",
    ]


def test_vm_never_created_is_not_destroyed(lab: FakeLab) -> None:
    lab.vagrant.states[PRIMARY] = "not_created"
    vms.destroy_vm(lab, PRIMARY, [PRIMARY])
    assert lab.vagrant.calls == [Vagrant("state", (PRIMARY,))]
    assert lab.mutations() == []


def test_vm_unknown_to_the_lab_spec_is_a_config_error(lab: FakeLab) -> None:
    with pytest.raises(ConfigError, match=r"windows\.vm"):
        vms.halt_vm(lab, "windows.vm", ["windows.vm"])
    assert lab.journal == []


# --- restore_primary -----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["running", "not_created"])
def test_primary_that_runs_or_was_destroyed_is_not_restored(lab: FakeLab, state: str) -> None:
    # not_created: promotion destroyed it on purpose; starting it would make a second primary
    lab.vagrant.states[PRIMARY] = state
    assert lab_state.restore_primary(lab) is None
    assert lab.vagrant.calls == [Vagrant("state", (PRIMARY,))]
    assert lab.mutations() == []


@pytest.mark.parametrize("state", ["poweroff", "aborted", "saved"])
def test_primary_left_halted_by_a_drill_is_started_and_waited_for(lab: FakeLab, state: str) -> None:
    lab.vagrant.states[PRIMARY] = state
    lab.primary.on(["true"])
    said = lab_state.restore_primary(lab)
    assert said is not None and state in said and PRIMARY in said
    assert lab.mutations() == [f"vagrant up {PRIMARY}", f"lab forget_host {PRIMARY}"]
    assert lab.vagrant.states[PRIMARY] == "running"
    assert lab.primary.commands() == [["true"]]
