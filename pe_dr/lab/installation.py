"""A standing PE installation in the place of the Vagrant lab (target = "installation"): its hosts
are reached over SSH as the spec says, and nothing the drill does may build, halt, destroy or
snapshot them. What would, refuses in one sentence, before it acts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NoReturn

from pe_dr.errors import PreconditionError
from pe_dr.lab.spec import LabSpec
from pe_dr.parsing.vagrant import SSHParams

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class Installation:
    """What the drill asks of `vagrant`, answered for an installation: every host stands
    ("running": whether it answers is for SSH to say), its SSH settings are the spec's, and a
    change of state is refused."""

    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        self.root = f"installation:{spec.name}"  # keys this process's SSH settings and pool

    def status(self, *, fresh: bool = False) -> dict[str, str]:
        return {h.name: "running" for h in self.spec.hosts}

    def state(self, vm: str) -> str:
        self.spec.host(vm)
        return "running"

    def ssh_params(self, vm: str) -> SSHParams:
        host = self.spec.host(vm)
        known_hosts = os.path.expanduser(self.spec.known_hosts or DEFAULT_KNOWN_HOSTS)
        return SSHParams(
            host=host.address,
            port=host.ssh_port or 22,
            user=host.ssh_user or "root",
            key_file=os.path.expanduser(host.ssh_identity) if host.ssh_identity else "",
            jump=host.jump or "",
            agent=not host.ssh_identity,
            known_hosts=known_hosts,
        )

    def ssh_params_many(self, vms: Sequence[str]) -> dict[str, SSHParams]:
        return {self.spec.host(vm).name: self.ssh_params(vm) for vm in vms}

    def _refuse(self, what: str, vm: str | None = None) -> NoReturn:
        target = f"{vm} of " if vm else ""
        raise PreconditionError(
            f"the drill would {what} {target}installation {self.spec.name!r}: an installation's "
            "hosts are never built, halted, destroyed or promoted by this tool"
        )

    def up(self, vm: str, *, primary: str | None = None) -> NoReturn:
        self._refuse("bring up", vm)

    def halt(self, vm: str, *, force: bool = False) -> NoReturn:
        self._refuse("halt", vm)

    def destroy(self, vm: str) -> NoReturn:
        self._refuse("destroy", vm)

    def boxes(self) -> NoReturn:
        self._refuse("list Vagrant boxes for")

    def box_add(self, name: str, provider: str = "virtualbox") -> NoReturn:
        self._refuse("add a Vagrant box to")

    def snapshot_save(self, vm: str, name: str) -> NoReturn:
        self._refuse("snapshot", vm)

    def snapshot_restore(self, vm: str, name: str) -> NoReturn:
        self._refuse("restore a snapshot of", vm)
