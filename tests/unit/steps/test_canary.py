"""The canary block's nftables ruleset and the reading of its remaining TTL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from pe_dr.steps.canary import (
    PRIMARY_PORTS,
    Block,
    CanaryError,
    remaining,
    remove_argv,
    ruleset,
)


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
