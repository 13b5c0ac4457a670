"""VirtualBox host-only ranges: a lab VirtualBox would refuse is refused first, in one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pe_dr.errors import ConfigError
from pe_dr.lab import virtualbox
from pe_dr.lab.spec import LabSpec

TUTORIAL = [(h.name, h.address) for h in LabSpec().hosts]  # 192.168.50.x


def test_version_strings_as_vboxmanage_prints_them() -> None:
    assert virtualbox.parse_version("7.0.14r161095\n") == (7, 0, 14)
    assert virtualbox.parse_version("6.1.50_Ubuntur161033") == (6, 1, 50)
    assert virtualbox.parse_version("WARNING: The vboxdrv kernel module is not loaded") is None


def test_the_tutorial_lab_is_refused_by_a_restricting_virtualbox() -> None:
    problem = virtualbox.host_only_problem(
        TUTORIAL, version=(7, 0, 14), conf_text=None, system="Linux"
    )
    assert problem is not None
    assert "192.168.50.4 (primary.vm)" in problem
    assert "192.168.56.0/21" in problem
    assert "`* 192.168.50.0/24`" in problem
    assert "/etc/vbox/networks.conf (create it)" in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("version", "system"),
    [((6, 1, 26), "Linux"), ((7, 0, 14), "Windows"), (None, "Linux")],
)
def test_no_restriction_before_6_1_28_on_windows_or_without_virtualbox(
    version: tuple[int, int, int] | None, system: str
) -> None:
    assert (
        virtualbox.host_only_problem(TUTORIAL, version=version, conf_text=None, system=system)
        is None
    )


def test_networks_conf_allows_the_lab() -> None:
    conf = "# lab\n* 10.0.0.0/8 192.168.50.0/24\n* 2001::/64\n"
    assert (
        virtualbox.host_only_problem(TUTORIAL, version=(7, 1, 4), conf_text=conf, system="Darwin")
        is None
    )


def test_networks_conf_replaces_the_default_range() -> None:
    # With the file present, 192.168.56.0/21 is allowed only when listed again.
    lab = [("primary.vm", "192.168.56.10")]
    problem = virtualbox.host_only_problem(
        lab, version=(7, 0, 0), conf_text="* 10.0.0.0/8\n", system="Linux"
    )
    assert problem is not None and "10.0.0.0/8" in problem
    assert "`* 192.168.56.0/24`" in problem and "(create it)" not in problem


def test_several_networks_outside_are_one_line_to_add() -> None:
    lab = [("a.vm", "192.168.50.4"), ("b.vm", "10.1.2.3")]
    problem = virtualbox.host_only_problem(lab, version=(7, 0, 0), conf_text=None, system="Linux")
    assert problem is not None
    assert "`* 10.1.2.0/24 192.168.50.0/24`" in problem
    assert "(and 1 more lab addresses)" in problem


def _fake_vboxmanage(folder: Path, version: str) -> None:
    exe = folder / "VBoxManage"
    exe.write_text(f"#!/bin/sh\necho '{version}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_require_reads_the_installed_version_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_vboxmanage(tmp_path, "7.0.14r161095")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(virtualbox.platform, "system", lambda: "Linux")
    with pytest.raises(ConfigError, match=r"192\.168\.50\.4 \(primary\.vm\)"):
        virtualbox.require_host_only_addresses(LabSpec(), conf_path=str(tmp_path / "missing"))
    conf = tmp_path / "networks.conf"
    conf.write_text("* 192.168.50.0/24\n")
    virtualbox.require_host_only_addresses(LabSpec(), conf_path=str(conf))


@pytest.mark.skipif(sys.platform != "linux", reason="the CLI test fakes VBoxManage on Linux")
def test_the_drill_refuses_in_its_first_seconds_with_exit_2(tmp_path: Path) -> None:
    """`pe-dr drill --yes` on the tutorial's lab with VirtualBox 7 and no networks.conf."""
    if Path(virtualbox.NETWORKS_CONF).exists():
        pytest.skip(f"this machine has a {virtualbox.NETWORKS_CONF}")
    _fake_vboxmanage(tmp_path, "7.0.14r161095")
    vagrant = tmp_path / "vagrant"  # never called: the check comes first
    vagrant.write_text('#!/bin/sh\necho called >> "$0.calls"\nexit 1\n')
    vagrant.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PE_DR_LAB_SPEC", None)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pe_dr_cli.main",
            "drill",
            "--yes",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "192.168.50.4" in lines[0] and "* 192.168.50.0/24" in lines[0], lines[0]
    assert not (tmp_path / "vagrant.calls").exists(), "no vagrant command ran"
    print(f"refused after {took:.1f} s")
