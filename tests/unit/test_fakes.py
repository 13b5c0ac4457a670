"""The fakes the action tests stand on are strict: what a test did not script fails it, and they
answer the way the real Host, VagrantLab and clients do (exit codes, missing files, errors)."""

from __future__ import annotations

import contextlib

import pytest

from pe_dr.errors import CommandFailed, ConfigError, TransientError
from pe_dr.lab import paths

from .fake_lab import FakeLab
from .fakes import (
    Exists,
    Http,
    Put,
    Read,
    Reply,
    Run,
    Unscripted,
    Vagrant,
    ls_1,
    rm_f,
    sha256sum,
    stat_mode_owner,
)


def test_unscripted_command_fails_even_when_the_caller_swallows_errors() -> None:
    lab = FakeLab()
    with pytest.raises(Unscripted, match=r"sudo -n -i rm -rf /etc/puppetlabs"):
        lab.primary.run(["rm", "-rf", "/etc/puppetlabs"], root=True)
    with contextlib.suppress(Exception):  # an action catching everything still leaves a trace
        lab.primary.run(["reboot"])
    assert len(lab.unexpected) == 2
    assert lab.primary.commands() == [["rm", "-rf", "/etc/puppetlabs"], ["reboot"]]


def test_unscripted_request_and_probe_fail() -> None:
    lab = FakeLab()
    lab.primary.write(paths.ADMIN_TOKEN, "tok-123456\n")
    with lab.pe() as pe, pytest.raises(Unscripted, match=r"GET https://primary\.vm:4433"):
        pe.roles()
    with pytest.raises(Unscripted):
        lab.accepts_tcp("primary.vm", 8170)
    with pytest.raises(Unscripted):
        lab.probe_puppetserver("primary.vm")
    assert len(lab.unexpected) == 3


def test_replies_come_in_order_and_the_last_one_repeats_exit_codes_as_host_judges_them() -> None:
    lab = FakeLab()
    host = lab.primary
    host.on(["true"], Reply(raises=TransientError("down")), Reply(1), Reply(0, "up\n"))
    with pytest.raises(TransientError):
        host.run(["true"])
    with pytest.raises(CommandFailed) as caught:
        host.run(["true"], root=True)
    assert caught.value.command == "sudo -n -i true" and caught.value.exit_code == 1
    assert host.run(["true"]).stdout == "up\n"
    assert host.run(["true"], ok_codes=(0, 2)).stdout == "up\n"
    assert host.calls == [Run(["true"]), Run(["true"], root=True), Run(["true"]), Run(["true"])]


def test_files_are_read_and_checked_from_the_tree_and_puts_land_in_it() -> None:
    host = FakeLab().replica
    with pytest.raises(CommandFailed, match="No such file"):
        host.read("/etc/x", root=True)
    assert host.exists("/etc") is False
    host.put("/etc/x/y.json", b"{}", mode=0o640, owner="pe-puppet", group="pe-puppet")
    assert host.exists("/etc/x") and host.exists("/etc/x/y.json")
    assert host.read("/etc/x/y.json") == b"{}"
    assert host.calls == [
        Read("/etc/x", root=True),
        Exists("/etc"),
        Put("/etc/x/y.json", b"{}", mode=0o640, owner="pe-puppet", group="pe-puppet"),
        Exists("/etc/x"),
        Exists("/etc/x/y.json"),
        Read("/etc/x/y.json"),
    ]


def test_coreutils_responders_see_what_puts_wrote() -> None:
    host = FakeLab().replica
    for argv, responder in [
        (["sha256sum", "/k"], sha256sum),
        (["stat", "-c", "%a %U %G", "/k"], stat_mode_owner),
        (["ls", "-1", "/d"], ls_1),
        (["rm", "-f", "/d/a"], rm_f),
    ]:
        host.on(argv, responder)
    assert host.run(["sha256sum", "/k"], ok_codes=(0, 1)).exit_code == 1
    host.put("/k", b"abc", mode=0o600, owner="pe-puppet", group="pe-puppet")
    assert host.run(["sha256sum", "/k"]).stdout.split()[0] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    )
    assert host.run(["stat", "-c", "%a %U %G", "/k"]).stdout == "600 pe-puppet pe-puppet\n"
    host.write("/d/a", "1").write("/d/b/c", "2").write("/dd", "3")
    assert host.run(["ls", "-1", "/d"]).stdout == "a\nb\n"
    host.run(["rm", "-f", "/d/a"])
    assert host.run(["ls", "-1", "/d"]).stdout == "b\n"


def test_vagrant_keeps_states_and_answers_like_vagrantlab() -> None:
    lab = FakeLab()
    lab.vagrant.halt("primary.vm")
    assert lab.vagrant.state("primary.vm") == "poweroff"
    with pytest.raises(ConfigError, match=r"windows\.vm"):
        lab.vagrant.state("windows.vm")
    assert lab.vagrant.mutations() == [Vagrant("halt", ("primary.vm",))]


def test_mutations_leave_out_reads() -> None:
    lab = FakeLab()
    lab.primary.on(["puppet", "infrastructure", "status", "--format=json"], stdout="[]")
    lab.primary.on(["puppet", "agent", "-t"])
    lab.http.on("POST", "https://primary.vm:4433/rbac-api/v2/auth/token/authenticate", json={})
    lab.primary.run(["puppet", "infrastructure", "status", "--format=json"], root=True)
    lab.vagrant.status()
    with lab.pe(token_file=None) as pe:
        pe.token_is_valid("tok-123456")
    assert lab.mutations() == []
    lab.primary.run(["puppet", "agent", "-t"], root=True)
    lab.forget_host("primary")
    assert lab.mutations() == ["primary.vm: puppet agent -t", "lab forget_host primary.vm"]
    assert lab.http.requests == [
        Http(
            "POST",
            "https://primary.vm:4433/rbac-api/v2/auth/token/authenticate",
            {"token": "tok-123456", "update_last_activity?": False},
        )
    ]
