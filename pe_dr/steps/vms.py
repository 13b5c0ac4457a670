"""The lab's VMs (the tutorial's start of the virtual machines): the box, up, halt, start, destroy.

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

import time

from pe_dr.errors import (
    CommandFailed,
    PreconditionError,
    TransientError,
    VagrantError,
)
from pe_dr.lab.live import Lab
from pe_dr.lab.virtualbox import require_host_only_addresses
from pe_dr.polling import wait_until


def ensure_box(lab: Lab) -> str:
    """The lab's box is installed before any VM is created: parallel `vagrant up`s of a fresh
    lab would otherwise each import it and race on VirtualBox's locks (real-world-findings §1
    row 8). Only looks when a VM is yet to be created."""
    if "not_created" not in lab.vagrant.status().values():
        return "no VM to create"
    if any(name == lab.spec.box for name, _ in lab.vagrant.boxes()):
        return "present"
    require_host_only_addresses(lab.spec)
    try:
        lab.vagrant.box_add(lab.spec.box)
    except VagrantError as exc:
        if "already exists" not in exc.message:  # another run added it meanwhile
            raise
        return "present"
    return "added"


def bring_up_order(lab: Lab) -> list[list[str]]:
    """The waves in which the lab's VMs start. On a first run (no VM created yet) the primary goes
    alone: its `vagrant up` creates the VirtualBox host-only interface, and parallel first runs
    create duplicates of it (real-world-findings §4.2 row 9); then every other VM at once (the
    replica and agents install the agent from the primary). Once the lab exists: the primary
    alongside GitLab, then the replica and the agents."""
    spec = lab.spec
    rest = [spec.replica.name, *(a.name for a in spec.agents)]
    if set(lab.vagrant.status().values()) <= {"not_created"}:
        return [[spec.primary.name], [spec.gitlab.name, *rest]]
    return [[spec.primary.name, spec.gitlab.name], rest]


def ensure_vm_up(lab: Lab, vm: str) -> str:
    """Start `vm` unless it runs, then wait until it answers over SSH."""
    vm = lab.spec.host(vm).name
    state = lab.vagrant.state(vm)
    if state != "running":
        require_host_only_addresses(lab.spec)
        lab.vagrant.up(vm, primary=lab.spec.primary.name)
        lab.forget_host(vm)
    wait_until(
        lambda: True if _ssh_answers(lab, vm) else None,
        timeout=300,
        interval=1,
        what=f"{vm} to answer over SSH",
    )
    return "started" if state != "running" else "already running"


def _ssh_answers(lab: Lab, vm: str) -> bool:
    try:
        lab.host(vm).run(["true"], timeout=30)
        return True
    except (TransientError, CommandFailed, OSError):
        lab.forget_host(vm)
        return False


def require_confirmation(vm: str, confirm: list[str], action: str) -> None:
    """Refuse a destructive action unless the run named the VM it may break."""
    if vm not in confirm:
        raise PreconditionError(
            f"refusing to {action} {vm}: the run must name it in `confirm` "
            "(--yes on the command line)"
        )


def halt_vm(lab: Lab, vm: str, confirm: list[str]) -> None:
    vm = lab.spec.host(vm).name
    require_confirmation(vm, confirm, "halt")
    if lab.vagrant.state(vm) == "running":
        lab.forget_host(vm)
        lab.vagrant.halt(vm)


def destroy_vm(lab: Lab, vm: str, confirm: list[str]) -> None:
    vm = lab.spec.host(vm).name
    require_confirmation(vm, confirm, "destroy")
    if lab.vagrant.state(vm) != "not_created":
        lab.forget_host(vm)
        lab.vagrant.destroy(vm)


def start_vm(lab: Lab, vm: str) -> float:
    """Start `vm` again; the epoch time it answered (the start of the failback clock)."""
    ensure_vm_up(lab, vm)
    return time.time()


def start_primary(lab: Lab) -> str:
    """The primary up again ("already running" when it was)."""
    return ensure_vm_up(lab, lab.spec.primary.name)


def run_puppet(lab: Lab, vm: str, *, noop: bool = False) -> str:
    argv = ["puppet", "agent", "-t"] + (["--noop"] if noop else [])
    return lab.host(vm).run(argv, root=True, ok_codes=(0, 2), timeout=1800).stdout
