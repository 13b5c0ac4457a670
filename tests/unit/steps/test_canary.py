"""The canary block's nftables ruleset and the reading of its remaining TTL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from pe_dr.errors import CheckFailed, CommandFailed
from pe_dr.steps.canary import (
    PRIMARY_PORTS,
    RULESET_PATH,
    Block,
    CanaryError,
    install_block,
    list_argv,
    remaining,
    remove_argv,
    remove_block,
    ruleset,
)
from tests.unit.fake_lab import FakeLab
from tests.unit.fakes import Run


def test_reject_ruleset_names_every_port_with_its_ttl_and_resets() -> None:
    text = ruleset(Block("10.20.0.5", mode="reject", ttl_seconds=90))
    for port in PRIMARY_PORTS:
        assert f"10.20.0.5 . {port} timeout 90s" in text
    assert "flags timeout" in text
    assert "ip daddr . tcp dport @blocked4 reject with tcp reset" in text
    assert " drop" not in text


def test_drop_ruleset_drops() -> None:
    text = ruleset(Block("10.20.0.5", mode="drop", ttl_seconds=3))
    assert "ip daddr . tcp dport @blocked4 drop" in text
    assert "reject" not in text


def test_ruleset_replaces_the_drills_table_whole() -> None:
    lines = ruleset(Block("10.20.0.5")).splitlines()
    assert lines[:2] == ["table inet pe_dr_canary", "delete table inet pe_dr_canary"]
    assert remove_argv() == ["nft", "delete", "table", "inet", "pe_dr_canary"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"primary_ip": "primary.vm"}, "not an IP address"),
        ({"primary_ip": "fd00::1"}, "not IPv4"),
        ({"primary_ip": "10.0.0.1", "mode": "block"}, "neither reject nor drop"),
        ({"primary_ip": "10.0.0.1", "ttl_seconds": 0}, "outside"),
        ({"primary_ip": "10.0.0.1", "ttl_seconds": 86_401}, "outside"),
        ({"primary_ip": "10.0.0.1", "ttl_seconds": 2.5}, "whole number"),
        ({"primary_ip": "10.0.0.1", "ttl_seconds": True}, "whole number"),
        ({"primary_ip": "10.0.0.1", "ports": ()}, "at least one"),
        ({"primary_ip": "10.0.0.1", "ports": (70000,)}, "1..65535"),
    ],
)
def test_bad_blocks_are_refused_in_one_sentence(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(CanaryError, match=words) as info:
        Block(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def _listing(elems: list[object]) -> str:
    return json.dumps(
        {
            "nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"table": {"family": "inet", "name": "pe_dr_canary"}},
                {
                    "set": {
                        "family": "inet",
                        "name": "blocked4",
                        "table": "pe_dr_canary",
                        "elem": elems,
                    }
                },
            ]
        }
    )


def test_remaining_reads_expires_per_address_and_port() -> None:
    elems = [
        {"elem": {"val": {"concat": ["10.20.0.5", 8140]}, "timeout": 90, "expires": 87}},
        {"elem": {"val": {"concat": ["10.20.0.5", 8081]}, "timeout": 90, "expires": 86}},
    ]
    assert remaining(_listing(elems)) == {("10.20.0.5", 8140): 87.0, ("10.20.0.5", 8081): 86.0}


def test_remaining_is_empty_once_the_kernel_expired_every_element() -> None:
    assert remaining(_listing([])) == {}


def test_remaining_refuses_an_element_it_did_not_write() -> None:
    with pytest.raises(CanaryError, match="did not write"):
        remaining(_listing([{"elem": {"val": "10.20.0.5", "timeout": 9}}]))
    with pytest.raises(CanaryError, match="no timeout"):
        remaining(_listing([{"elem": {"val": {"concat": ["10.20.0.5", 8140]}}}]))
    with pytest.raises(CanaryError, match="not JSON"):
        remaining("nft: error")


@pytest.mark.skipif(
    shutil.which("nft") is None or os.geteuid() != 0, reason="nft check mode needs nft and root"
)
@pytest.mark.parametrize("mode", ["reject", "drop"])
def test_nft_accepts_the_ruleset_in_check_mode(mode: str, tmp_path: object) -> None:
    # -c parses and validates against the kernel without committing anything.
    path = os.path.join(str(tmp_path), "canary.nft")
    with open(path, "w") as fh:
        fh.write(ruleset(Block("10.20.0.5", mode=mode, ttl_seconds=3)))
    proc = subprocess.run(["nft", "-c", "-f", path], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


# --- on a canary, over SSH (FakeLab: the real Lab over fake hosts) ----------------------------


CANARY = "linux.vm"


def _elements(block: Block, expires: float) -> list[object]:
    return [
        {"elem": {"val": {"concat": [block.primary_ip, p]}, "timeout": 90, "expires": expires}}
        for p in block.ports
    ]


def test_install_block_puts_the_ruleset_applies_it_and_reads_the_kernels_listing() -> None:
    lab = FakeLab()
    block = Block("192.168.50.4", mode="drop", ttl_seconds=90)
    host = lab.host(CANARY)
    host.on(["nft", "-f", RULESET_PATH])
    host.on(
        ["nft", "-j", "list", "table", "inet", "pe_dr_canary"],
        stdout=_listing(_elements(block, 88.5)),
    )
    evidence = install_block(lab, CANARY, block)
    assert evidence == {
        "canary": CANARY,
        "mode": "drop",
        "ports": sorted(PRIMARY_PORTS),
        "expires_in_seconds": 88.5,
    }
    assert host.content(RULESET_PATH).decode() == ruleset(block)
    assert host.files[RULESET_PATH].mode == 0o600
    assert [r.root for r in host.calls if isinstance(r, Run)] == [True, True]
    assert [p.path for p in host.puts()] == [RULESET_PATH]
    assert host.commands() == [["nft", "-f", RULESET_PATH], list_argv()]
    assert all(not lab.host(h).calls for h in ("primary.vm", "replica.vm", "gitlab.vm"))


def test_a_block_the_kernel_does_not_list_whole_fails() -> None:
    lab = FakeLab()
    block = Block("192.168.50.4")
    host = lab.host(CANARY)
    host.on(["nft", "-f", RULESET_PATH])
    partial = _elements(block, 500)[:2]
    host.on(["nft", "-j", "list", "table", "inet", "pe_dr_canary"], stdout=_listing(partial))
    with pytest.raises(
        CheckFailed, match=r"lists 2 of its 5 address:port pairs .*192.168.50.4:8143"
    ):
        install_block(lab, CANARY, block)


@pytest.mark.parametrize(
    ("exit_code", "stderr", "outcome"),
    [
        (0, "", "removed"),
        (1, "Error: Could not process rule: No such file or directory", "already gone"),
        (1, "Error: Operation not permitted", None),
    ],
)
def test_remove_block_says_what_it_found(exit_code: int, stderr: str, outcome: str | None) -> None:
    lab = FakeLab()
    lab.host(CANARY).on(remove_argv(), exit_code=exit_code, stderr=stderr)
    if outcome is None:
        with pytest.raises(CommandFailed, match="Operation not permitted"):
            remove_block(lab, CANARY)
    else:
        assert remove_block(lab, CANARY) == outcome
