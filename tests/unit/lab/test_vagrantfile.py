"""The repository's Vagrantfile: same VMs as pe_dr.lab.spec.LabSpec(), and valid for a real vagrant.

The vagrant part needs Debian's `vagrant` package (skips otherwise). Without VirtualBox,
`vagrant validate --ignore-provider` still works, while `vagrant status` cannot: vagrant then
reports that no provider is usable, which must reach us as a VagrantError with its message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pe_dr.errors import VagrantError
from pe_dr.lab.spec import HostSpec, LabSpec, Role, dump_spec
from pe_dr.lab.vagrant import LAB_TOML_ENV, VagrantLab, find_vagrant

REPO = Path(__file__).resolve().parents[3]
VAGRANTFILE = REPO / "Vagrantfile"
PROBE = Path(__file__).with_name("vagrantfile_probe.rb")
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")


def defined(env: dict[str, str] | None = None) -> dict[str, Any]:
    """What the Vagrantfile defines under `env` (read by Ruby itself, with a stand-in for
    Vagrant's configuration DSL): the box and, per machine, address, resources, provisioners."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PE_DR_")}
    done = subprocess.run(
        ["ruby", str(PROBE), str(REPO)],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(next(ln for ln in done.stderr.splitlines() if "lab spec" in ln))
    raw = json.loads(done.stdout)
    machines = {}
    for name, m in raw["machines"].items():
        vm = m["vm"]
        hosts, install = (c["kwargs"] for c in vm["provision:calls"])
        (vbox,) = vm["provider:blocks"]
        machines[name] = {
            "ip": vm["network:calls"][0]["kwargs"]["ip"],
            "memory": vbox["calls"]["memory"],
            "cpus": vbox["calls"]["cpus"],
            "script": install["path"],
            "env": install.get("env", {}),
            "hosts_args": hosts["args"],
        }
    return {"box": raw["box"], "machines": machines}


@needs_ruby
def test_vagrantfile_is_the_default_lab_spec() -> None:
    spec = LabSpec()
    lab = defined()
    assert lab["box"] == spec.box
    machines = lab["machines"]
    assert list(machines) == [h.name for h in spec.hosts]
    for host in spec.hosts:
        entry = machines[host.name]
        assert entry["ip"] == host.address, host.name
        assert (entry["memory"], entry["cpus"]) == (host.memory, host.cpu_count), host.name
        assert (REPO / entry["script"]).is_file(), entry["script"]
    assert machines[spec.primary.name]["memory"] == 8192  # PE needs >= 8 GB
    assert machines[spec.primary.name]["script"] == "provision/primary.sh"
    assert machines[spec.primary.name]["env"]["PE_VERSION"] == spec.pe_version
    assert machines[spec.gitlab.name]["script"] == "provision/gitlab.sh"
    assert machines[spec.gitlab.name]["env"]["GITLAB_EXTERNAL_URL"] == "http://192.168.50.7"
    for agent in [spec.replica, *spec.agents]:
        assert machines[agent.name]["script"] == "provision/agent.sh"
        assert machines[agent.name]["env"] == {"PE_PRIMARY": spec.primary.name}


def edited_spec() -> LabSpec:
    """The tutorial's lab moved to VirtualBox's allowed range, with a second agent, its own box,
    PE version, download URL, GitLab port and resources."""
    hosts = [
        HostSpec(name="pe1.lab", role=Role.PRIMARY, address="192.168.56.10", memory_mb=12288),
        HostSpec(name="pe2.lab", role=Role.REPLICA, address="192.168.56.11", cpus=4),
        HostSpec(name="web1.lab", role=Role.AGENT, address="192.168.56.20"),
        HostSpec(name="web2.lab", role=Role.AGENT, address="192.168.56.21", memory_mb=1024),
        HostSpec(name="git.lab", role=Role.GITLAB, address="192.168.56.30"),
    ]
    return LabSpec(
        name="moved",
        pe_version="2023.8.1",
        pe_download_url="https://mirror.example/pe.tar.gz",
        box="generic/ubuntu2204",
        gitlab_http_port=8080,
        hosts=hosts,
    )


@needs_ruby
@pytest.mark.parametrize("how", ["toml-from-pe-dr", "spec-file"])
def test_vagrantfile_follows_an_edited_spec(how: str, tmp_path: Path) -> None:
    spec = edited_spec()
    if how == "toml-from-pe-dr":  # what VagrantLab passes to every vagrant command
        env = {LAB_TOML_ENV: dump_spec(spec)}
    else:  # an admin running vagrant by hand
        (tmp_path / "lab.toml").write_text(dump_spec(spec))
        env = {"PE_DR_LAB_SPEC": str(tmp_path / "lab.toml")}
    lab = defined(env)
    assert lab["box"] == "generic/ubuntu2204"
    machines = lab["machines"]
    assert list(machines) == [h.name for h in spec.hosts]
    for host in spec.hosts:
        entry = machines[host.name]
        assert entry["ip"] == host.address
        assert (entry["memory"], entry["cpus"]) == (host.memory, host.cpu_count)
        assert entry["hosts_args"] == [host.name, *(f"{h.address}={h.name}" for h in spec.hosts)]
    assert machines["pe1.lab"]["memory"] == 12288 and machines["pe2.lab"]["cpus"] == 4
    assert machines["pe1.lab"]["env"]["PE_VERSION"] == "2023.8.1"
    assert machines["pe1.lab"]["env"]["PE_DOWNLOAD_URL"] == "https://mirror.example/pe.tar.gz"
    assert machines["git.lab"]["env"]["GITLAB_EXTERNAL_URL"] == "http://192.168.56.30:8080"
    assert machines["web2.lab"]["env"] == {"PE_PRIMARY": "pe1.lab"}


@needs_ruby
def test_after_a_promotion_the_lost_primary_is_rebuilt_as_an_agent_of_the_promoted_one() -> None:
    spec = LabSpec()
    machines = defined({LAB_TOML_ENV: dump_spec(spec), "PE_DR_PRIMARY": "replica.vm"})["machines"]
    assert machines["primary.vm"]["script"] == "provision/agent.sh"
    assert machines["primary.vm"]["env"] == {"PE_PRIMARY": "replica.vm"}
    assert machines["replica.vm"]["script"] == "provision/primary.sh"
    assert machines["linux.vm"]["env"] == {"PE_PRIMARY": "replica.vm"}


@needs_ruby
def test_the_ruby_defaults_are_the_specs(tmp_path: Path) -> None:
    # a spec without resources: the Ruby reader fills them in as pe_dr/lab/spec.py does
    spec = LabSpec()
    lab = defined({LAB_TOML_ENV: dump_spec(spec)})
    assert {n: (m["memory"], m["cpus"]) for n, m in lab["machines"].items()} == {
        h.name: (h.memory, h.cpu_count) for h in spec.hosts
    }


@needs_ruby
@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('hosts = [{name = "p"}]\n', "line 1: not a string or number"),
        ("[lab]\n", "line 1: not understood: [lab]"),
        ('[[hosts]]\nname = "a.vm"\nrole = "agent"\n', "a host has no address"),
    ],
)
def test_the_ruby_reader_refuses_what_it_does_not_understand(text: str, words: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(words)):
        defined({LAB_TOML_ENV: text})


def test_vagrantfile_passes_secrets_by_env_only() -> None:
    text = VAGRANTFILE.read_text()
    assert '"PE_CONSOLE_PASSWORD" => ENV.fetch("PE_CONSOLE_PASSWORD", "")' in text
    assert '"GITLAB_ROOT_PASSWORD" => ENV.fetch("GITLAB_ROOT_PASSWORD", "")' in text
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
@pytest.mark.parametrize("spec", [LabSpec(), edited_spec()], ids=["tutorial", "edited"])
def test_vagrant_validates_the_vagrantfile(project: Path, spec: LabSpec) -> None:
    lab = VagrantLab(project, timeout=120, spec=spec)
    assert re.match(r"^\d+\.\d+", lab.version())
    lab.validate(ignore_provider=True)


@needs_vagrant
def test_real_vagrant_reads_the_spec_it_is_given(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a spec the reader refuses makes vagrant itself fail naming it: the Vagrantfile read it
    monkeypatch.setenv(LAB_TOML_ENV, "[lab]\n")
    with pytest.raises(VagrantError, match="not understood"):
        VagrantLab(project, timeout=120).validate(ignore_provider=True)


STAND_IN_VBOXMANAGE = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in --version) echo "7.0.14r161095";; *) exit 1;; esac
"""


@needs_vagrant
@pytest.mark.parametrize("spec", [LabSpec(), edited_spec()], ids=["tutorial", "edited"])
def test_vagrant_status_lists_the_lab(
    project: Path, spec: LabSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real vagrant reads the Vagrantfile and lists the machines; without VirtualBox here, a
    # stand-in VBoxManage answers the one question vagrant asks before it can report machines
    # that were never created (its version), and any other question fails.
    calls = None
    if shutil.which("VBoxManage") is None:
        stand_in = tmp_path / "virtualbox"
        stand_in.mkdir()
        (stand_in / "VBoxManage").write_text(STAND_IN_VBOXMANAGE)
        (stand_in / "VBoxManage").chmod(0o755)
        monkeypatch.setenv("PATH", f"{stand_in}{os.pathsep}{os.environ['PATH']}")
        calls = stand_in / "calls"
    states = VagrantLab(project, timeout=120, spec=spec).status()
    assert states == {h.name: "not_created" for h in spec.hosts}
    if calls is not None:
        assert set(calls.read_text().split()) == {"--version"}


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
    assert 'args: [vm["name"], *HOSTS_ARGS], run: "always"' in VAGRANTFILE.read_text()


STAND_IN_PROVIDER = Path(__file__).with_name("stand_in_provider.rb")


@needs_vagrant
@pytest.mark.parametrize("spec", [LabSpec(), edited_spec()], ids=["tutorial", "edited"])
def test_vagrant_status_lists_the_specs_hosts_with_a_stand_in_provider(
    project: Path, spec: LabSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vagrant status` without VirtualBox: a provider that answers `not_created` for every VM is
    defined in a Vagrantfile of a throw-away VAGRANT_HOME (vagrant loads that file before the
    project's), so the project's Vagrantfile is read unchanged by the real vagrant."""
    home = tmp_path / "vagrant-home"
    home.mkdir()
    shutil.copy(STAND_IN_PROVIDER, home / "Vagrantfile")
    monkeypatch.setenv("VAGRANT_HOME", str(home))
    monkeypatch.setenv("VAGRANT_DEFAULT_PROVIDER", "pedrtest")
    monkeypatch.setenv("VAGRANT_CHECKPOINT_DISABLE", "1")
    states = VagrantLab(project, timeout=120, spec=spec).status()
    assert list(states) == [h.name for h in spec.hosts]
    assert set(states.values()) == {"not_created"}
