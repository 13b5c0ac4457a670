"""The repository's Vagrantfile: same VMs as pe_dr.lab.spec.LabSpec(), and valid for a real vagrant.

The vagrant part needs Debian's `vagrant` package (skips otherwise). Without VirtualBox,
`vagrant validate --ignore-provider` still works, while `vagrant status` cannot: vagrant then
reports that no provider is usable, which must reach us as a VagrantError with its message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pe_dr.errors import VagrantError
from pe_dr.lab.spec import LabSpec, Role
from pe_dr.lab.vagrant import VagrantLab, find_vagrant

REPO = Path(__file__).resolve().parents[3]
VAGRANTFILE = REPO / "Vagrantfile"
_ENTRY = re.compile(
    r'\{\s*name:\s*"(?P<name>[^"]+)",\s*ip:\s*"(?P<ip>[^"]+)",\s*memory:\s*(?P<memory>\d+),'
    r'\s*cpus:\s*(?P<cpus>\d+),\s*script:\s*"(?P<script>[^"]+)"\s*\}'
)
MIN_MEMORY = {Role.PRIMARY: 8192, Role.REPLICA: 8192, Role.GITLAB: 6144, Role.AGENT: 1024}


def _entries() -> dict[str, dict[str, str]]:
    return {m["name"]: m.groupdict() for m in _ENTRY.finditer(VAGRANTFILE.read_text())}


def test_vagrantfile_matches_the_default_lab_spec() -> None:
    spec = LabSpec()
    entries = _entries()
    assert set(entries) == {h.name for h in spec.hosts}
    for host in spec.hosts:
        entry = entries[host.name]
        assert entry["ip"] == host.address, host.name
        assert int(entry["memory"]) >= MIN_MEMORY[host.role], host.name
        assert (REPO / entry["script"]).is_file(), entry["script"]
    assert int(entries[spec.primary.name]["memory"]) == 8192  # PE needs >= 8 GB
    assert entries[spec.primary.name]["script"] == "provision/primary.sh"
    assert entries[spec.gitlab.name]["script"] == "provision/gitlab.sh"
    for agent in [spec.replica, *spec.agents]:
        assert entries[agent.name]["script"] == "provision/agent.sh"


def test_vagrantfile_passes_secrets_by_env_only() -> None:
    text = VAGRANTFILE.read_text()
    assert '"PE_CONSOLE_PASSWORD" => ENV.fetch("PE_CONSOLE_PASSWORD", "")' in text
    assert '"GITLAB_ROOT_PASSWORD" => ENV.fetch("GITLAB_ROOT_PASSWORD", "")' in text
    assert '"PE_VERSION" => ENV.fetch("PE_VERSION", "2025.8.0")' in text
    assert f'config.vm.box = "{LabSpec().box}"' in text
    for script in (REPO / "provision").glob("*.sh"):
        body = script.read_text()
        assert body.startswith("#!/usr/bin/env bash\n"), script.name
        assert "set -euo pipefail" in body, script.name
        assert "set -x" not in body, script.name  # would echo the passwords


SYSTEM_VAGRANT = shutil.which("vagrant", path=os.defpath)  # Debian's, not a labsim stub
needs_vagrant = pytest.mark.skipif(
    SYSTEM_VAGRANT is None, reason="vagrant is not installed (apt-get install vagrant)"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project, with the system's vagrant first on PATH: a labsim lab that a test
    of the same session keeps up (tests/flows) has put its vagrant stub there, which would answer
    in the real one's place."""
    assert SYSTEM_VAGRANT is not None
    monkeypatch.setenv("PATH", f"{Path(SYSTEM_VAGRANT).parent}{os.pathsep}{os.environ['PATH']}")
    assert find_vagrant() == SYSTEM_VAGRANT
    shutil.copy(VAGRANTFILE, tmp_path / "Vagrantfile")  # vagrant writes .vagrant/ next to it
    shutil.copytree(REPO / "provision", tmp_path / "provision")
    return tmp_path


@needs_vagrant
def test_vagrant_validates_the_vagrantfile(project: Path) -> None:
    lab = VagrantLab(project, timeout=120)
    assert re.match(r"^\d+\.\d+", lab.version())
    lab.validate(ignore_provider=True)


@needs_vagrant
def test_vagrant_status_lists_the_lab(project: Path) -> None:
    lab = VagrantLab(project, timeout=120)
    try:
        states = lab.status()
    except VagrantError as e:
        # without VirtualBox (or another usable provider) vagrant cannot report machine states
        assert shutil.which("VBoxManage") is None, e
        assert "provider" in str(e)
        pytest.skip(f"vagrant has no usable provider here: {str(e).splitlines()[0]}")
    assert set(states) == {h.name for h in LabSpec().hosts}
    assert set(states.values()) <= {"not_created", "running", "poweroff", "saved", "aborted"}


def test_hosts_script_maps_names_and_drops_every_loopback_line_of_its_own_name(
    tmp_path: Path,
) -> None:
    # Vagrant writes `127.0.N.1 NAME SHORT` at the first free N on each boot (127.0.2.1 on the
    # jammy box; hashicorp/vagrant lib/vagrant/util/guest_hosts.rb); Ubuntu has 127.0.1.1.
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        "127.0.1.1 primary.vm primary\n"
        "127.0.2.1 primary.vm primary\n"
        "127.0.3.1 other.example other\n"
        "::1 localhost ip6-localhost\n"
    )
    args = [f"{h.address}={h.name}" for h in LabSpec().hosts]
    for _ in range(2):  # idempotent
        subprocess.run(
            ["bash", str(REPO / "provision" / "hosts.sh"), "primary.vm", *args],
            check=True,
            capture_output=True,
            env={**os.environ, "HOSTS_FILE": str(hosts)},
        )
    lines = hosts.read_text().splitlines()
    assert "127.0.0.1 localhost" in lines
    assert "127.0.3.1 other.example other" in lines  # not this VM's name
    assert not any(re.match(r"127\.0\.\d+\.1\s.*primary", line) for line in lines), lines
    assert lines.count("192.168.50.4 primary.vm primary") == 1
    assert "192.168.50.41 replica.vm replica" in lines


def test_primary_script_downloads_from_the_tutorial_host_and_installs_without_prompts() -> None:
    body = (REPO / "provision" / "primary.sh").read_text()
    assert "https://pm.puppetlabs.com/puppet-enterprise/${PE_VERSION}/${name}.tar.gz" in body
    assert re.search(r"puppet-enterprise-installer\" -y -c ", body)
    # the hosts provisioner runs on every boot, since Vagrant re-adds its line on every boot
    assert 'args: [vm[:name], *HOSTS_ARGS], run: "always"' in VAGRANTFILE.read_text()
