"""SSH settings from `vagrant ssh-config`: one call for many agents, remembered per process until
the VM is started, halted or destroyed, or connecting with them fails."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pe_dr.errors import VagrantError
from pe_dr.lab import live as lab_module
from pe_dr.lab.host import Host
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import HostSpec, LabSpec, Role
from pe_dr.parsing.vagrant import SSHParams


class FakeVagrant:
    def __init__(self, root: str) -> None:
        self.root = root
        self.calls: list[tuple[str, ...]] = []
        self.port = 2200
        self.fail_many = False

    def _params(self, vm: str) -> SSHParams:
        return SSHParams(host="127.0.0.1", port=self.port, user="vagrant", key_file="/k")

    def ssh_params(self, vm: str) -> SSHParams:
        self.calls.append((vm,))
        return self._params(vm)

    def ssh_params_many(self, vms: Sequence[str]) -> dict[str, SSHParams]:
        self.calls.append(tuple(vms))
        if self.fail_many:
            raise VagrantError("`vagrant ssh-config` failed: not ready for SSH")
        return {vm: self._params(vm) for vm in vms}


def spec(agents: int) -> LabSpec:
    hosts = [
        HostSpec(name="primary.vm", role=Role.PRIMARY, address="10.0.0.4"),
        HostSpec(name="replica.vm", role=Role.REPLICA, address="10.0.0.41"),
        HostSpec(name="gitlab.vm", role=Role.GITLAB, address="10.0.0.7"),
    ] + [
        HostSpec(name=f"agent{i}.vm", role=Role.AGENT, address=f"10.0.1.{i}")
        for i in range(1, agents + 1)
    ]
    return LabSpec(hosts=hosts)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(lab_module, "_ssh_params", {})
    monkeypatch.setattr(lab_module, "_pooled", {})
    yield


def make_lab(fake: FakeVagrant, agents: int = 3) -> Lab:
    lab = Lab(spec(agents))
    lab.vagrant = fake  # type: ignore[assignment]
    return lab


def test_settings_are_remembered_across_labs_until_the_vm_changes() -> None:
    fake = FakeVagrant("/lab")
    make_lab(fake).host("primary.vm")
    make_lab(fake).host("primary.vm")
    assert fake.calls == [("primary.vm",)]
    make_lab(fake).forget_host("primary.vm")  # started, halted or destroyed
    make_lab(fake).host("primary.vm")
    assert fake.calls == [("primary.vm",), ("primary.vm",)]
    make_lab(FakeVagrant("/other-lab")).host("primary.vm")  # another Vagrant project
    assert len(fake.calls) == 2


def test_the_labs_of_a_process_share_one_host_per_vm_and_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each step opens its own Lab: the SSH connection (a key exchange each) outlives it."""
    closed: list[str] = []
    monkeypatch.setattr(Host, "close", lambda self, wait=-1: closed.append(self.name))
    fake = FakeVagrant("/lab")
    first = make_lab(fake)
    host = first.host("primary.vm")
    first.close()
    assert closed == [], "a Lab's end leaves the connection open"
    with make_lab(fake) as second:
        assert second.host("primary.vm") is host
    make_lab(fake).forget_host("primary.vm")  # halted: the connection is closed and dropped
    assert closed == ["primary.vm"]
    assert make_lab(fake).host("primary.vm") is not host
    lab_module.close_connections()
    assert closed == ["primary.vm", "primary.vm"]


def test_settings_that_changed_replace_the_kept_host(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []
    monkeypatch.setattr(Host, "close", lambda self, wait=-1: closed.append(self.ssh.port))
    fake = FakeVagrant("/lab")
    old = make_lab(fake).host("primary.vm")
    lab_module._forget_params(("/lab", "primary.vm"), SSHParams("127.0.0.1", 9, "vagrant", "/k"))
    assert make_lab(fake).host("primary.vm") is old, "other settings than its own: kept"
    assert old.on_unreachable is not None
    old.on_unreachable()  # connecting with its settings failed
    fake.port = 2201
    new = make_lab(fake).host("primary.vm")
    assert new is not old and new.ssh.port == 2201
    assert closed == [2200]


def test_a_failed_connection_forgets_the_settings_it_used() -> None:
    fake = FakeVagrant("/lab")
    host = make_lab(fake).host("primary.vm")
    assert host.on_unreachable is not None
    host.on_unreachable()
    fake.port = 2201  # vagrant moved the forwarded port
    assert make_lab(fake).host("primary.vm").ssh.port == 2201


def test_agents_are_resolved_with_one_vagrant_call() -> None:
    fake = FakeVagrant("/lab")
    lab = make_lab(fake, agents=5)
    lab.host("agent1.vm")
    lab.prefetch_hosts([f"agent{i}.vm" for i in range(1, 6)])
    assert fake.calls == [("agent1.vm",), ("agent2.vm", "agent3.vm", "agent4.vm", "agent5.vm")]
    for i in range(1, 6):
        lab.host(f"agent{i}.vm")
    make_lab(fake, agents=5).prefetch_hosts([f"agent{i}.vm" for i in range(1, 6)])
    assert len(fake.calls) == 2, "the next task's Lab finds them remembered"


def test_when_the_one_call_fails_each_agent_is_looked_up_alone() -> None:
    fake = FakeVagrant("/lab")
    fake.fail_many = True
    lab = make_lab(fake, agents=2)
    lab.prefetch_hosts(["agent1.vm", "agent2.vm"])
    lab.host("agent1.vm")
    lab.host("agent2.vm")
    assert fake.calls == [("agent1.vm", "agent2.vm"), ("agent1.vm",), ("agent2.vm",)]


def test_host_reports_an_unreachable_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from pe_dr.errors import TransientError
    from pe_dr.lab.host import Host

    told: list[Any] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    host = Host(
        "primary.vm",
        SSHParams(host="127.0.0.1", port=port, user="vagrant", key_file=__file__),
        connect_timeout=2,
        on_unreachable=lambda: told.append(True),
    )
    with pytest.raises(TransientError, match="connection refused"):
        host.run(["true"])
    assert told == [True]
