"""Pre-flight of an installation (issue 26.5): every host takes an SSH login and `sudo -n`, its
clock agrees with the controller's, each canary has nft, and the canaries are named in `confirm`;
no vagrant, no VirtualBox. All within its first seconds, each problem one sentence."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pe_dr import preflight
from pe_dr.errors import TransientError
from pe_dr.lab.spec import LabSpec, load_spec
from tests.unit.fake_lab import FakeLab
from tests.unit.fakes import Reply
from tests.unit.lab.test_installation import INSTALLATION

HOSTS = (
    "pe-primary.example.com",
    "pe-replica.example.com",
    "web1.example.com",
    "web2.example.com",
    "web3.example.com",
)


@pytest.fixture
def spec(tmp_path: Path) -> LabSpec:
    path = tmp_path / "prod.toml"
    path.write_text(INSTALLATION)
    return load_spec(path)


@pytest.fixture
def lab(spec: LabSpec, monkeypatch: pytest.MonkeyPatch) -> FakeLab:
    fake = FakeLab(spec)
    monkeypatch.setattr(preflight, "Lab", lambda _spec: fake)
    for name in HOSTS:
        host = fake.host(name)
        host.on(["date", "+%s.%N"], lambda *_: Reply(stdout=f"{time.time():.9f}\n"))
        host.on(["true"])
    fake.host("web1.example.com").on(["nft", "--version"], stdout="nftables v1.0.6\n")
    return fake


def _needs(spec: LabSpec, confirm: tuple[str, ...] = ("web1.example.com",)) -> preflight.Needs:
    return preflight.needs_for("canary-drill", spec, confirm=confirm)


def test_a_ready_installation_passes_touching_nothing(spec: LabSpec, lab: FakeLab) -> None:
    needs = _needs(spec)
    assert needs.blocks == ("web1.example.com",) and needs.halts == needs.destroys == ()
    assert preflight.local(spec, needs).problems == []  # no vagrant, no VirtualBox here
    assert preflight.on_the_lab(spec, needs).problems == []
    # it reads only: the time, `sudo -n true`, nft's version; nothing written, no vagrant
    commands = {tuple(argv) for name in HOSTS for argv in lab.host(name).commands()}
    assert commands == {("date", "+%s.%N"), ("true",), ("nft", "--version")}
    assert all(not lab.host(name).puts() for name in HOSTS)
    assert lab.vagrant.mutations() == [] and lab.http.mutations() == []
    roots = {(name, tuple(r.argv)) for name in HOSTS for r in lab.host(name).calls if r.root}
    assert {name for name, _ in roots} == set(HOSTS)  # sudo proven on every host
    assert ("web1.example.com", ("nft", "--version")) in roots
    assert all(argv != ("nft", "--version") for name, argv in roots if name != "web1.example.com")


def test_every_problem_of_every_host_is_one_sentence(spec: LabSpec, lab: FakeLab) -> None:
    lab.host("pe-replica.example.com").on(
        ["date", "+%s.%N"], Reply(raises=TransientError("cannot reach pe-replica over SSH"))
    )
    lab.host("web2.example.com").on(
        ["date", "+%s.%N"], lambda *_: Reply(stdout=f"{time.time() + 30}\n")
    )
    lab.host("web3.example.com").on(["true"], exit_code=1, stderr="sudo: a password is required")
    lab.host("web1.example.com").on(["nft", "--version"], exit_code=127, stderr="nft: not found")
    problems = preflight.on_the_lab(spec, _needs(spec)).problems
    assert len(problems) == 4, problems
    assert any(p.startswith("pe-replica.example.com: no SSH login") for p in problems)
    assert any("web2.example.com's clock is 30." in p and "ahead of" in p for p in problems)
    assert any(p.startswith("web3.example.com: `sudo -n` refused") for p in problems)
    assert any(p.startswith("web1.example.com is a canary without nft") for p in problems)
    assert all("\n" not in p for p in problems)


def test_the_canaries_must_be_named_to_be_blocked(spec: LabSpec) -> None:
    problems = preflight.local(spec, _needs(spec, confirm=())).problems
    assert problems == [
        "refusing to block the primary from web1.example.com: the run must name it in "
        "`confirm` (--yes on the command line)"
    ]
