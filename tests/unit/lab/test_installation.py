"""The installation target: a standing PE installation named by its spec, reached over SSH as the
spec says, never built, halted or destroyed (issue 26.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_dr.errors import ConfigError, PreconditionError
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import dump_spec, load_spec
from pe_dr.steps import vms

INSTALLATION = """\
name = "prod"
target = "installation"
known_hosts = "/etc/pe-dr/known_hosts"

[[hosts]]
name = "pe-primary.example.com"
role = "primary"
address = "10.1.0.5"
ssh_user = "admin"

[[hosts]]
name = "pe-replica.example.com"
role = "replica"
address = "10.1.0.6"
ssh_user = "admin"
ssh_port = 2222
ssh_identity = "/etc/pe-dr/id_ed25519"

[[hosts]]
name = "web1.example.com"
role = "agent"
address = "10.1.1.11"
ssh_user = "admin"
jump = "ops@bastion.example.com:2022"
canary = true

[[hosts]]
name = "web2.example.com"
role = "agent"
address = "10.1.1.12"
ssh_user = "admin"

[[hosts]]
name = "web3.example.com"
role = "agent"
address = "10.1.1.13"
ssh_user = "admin"
"""


def _spec(tmp_path: Path, text: str = INSTALLATION):  # type: ignore[no-untyped-def]
    path = tmp_path / "prod.toml"
    path.write_text(text)
    return load_spec(path)


def test_an_installation_names_its_hosts_their_logins_and_canaries(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.installation
    assert [h.name for h in spec.canaries] == ["web1.example.com"]
    with pytest.raises(ConfigError, match="names no GitLab host"):
        spec.gitlab  # noqa: B018 (an installation need not have one)
    assert _spec(tmp_path, dump_spec(spec)) == spec  # the TOML round trip keeps every field


def test_its_hosts_are_reached_as_the_spec_says_verifying_host_keys(tmp_path: Path) -> None:
    lab = Lab(_spec(tmp_path))
    primary = lab.vagrant.ssh_params("pe-primary.example.com")
    assert (primary.host, primary.port, primary.user) == ("10.1.0.5", 22, "admin")
    assert primary.agent and primary.key_file == ""  # no key file: the SSH agent's keys
    assert primary.known_hosts == "/etc/pe-dr/known_hosts"  # only the keys it lists
    replica = lab.vagrant.ssh_params("pe-replica")
    assert (replica.port, replica.key_file, replica.agent) == (2222, "/etc/pe-dr/id_ed25519", False)
    assert lab.vagrant.ssh_params("web1").jump == "ops@bastion.example.com:2022"
    default = Lab(
        _spec(tmp_path, INSTALLATION.replace('known_hosts = "/etc/pe-dr/known_hosts"\n', ""))
    )
    assert default.vagrant.ssh_params("web2").known_hosts == str(
        Path("~/.ssh/known_hosts").expanduser()
    )


@pytest.mark.parametrize(
    ("verb", "act"),
    [
        ("bring up", lambda lab: lab.vagrant.up("web2.example.com")),
        (
            "halt",
            lambda lab: vms.halt_vm(lab, "pe-primary.example.com", ["pe-primary.example.com"]),
        ),
        ("destroy", lambda lab: vms.destroy_vm(lab, "web3.example.com", ["web3.example.com"])),
        ("add a Vagrant box to", lambda lab: lab.vagrant.box_add("ubuntu/jammy64")),
    ],
)
def test_nothing_is_built_halted_or_destroyed(tmp_path: Path, verb: str, act) -> None:  # type: ignore[no-untyped-def]
    lab = Lab(_spec(tmp_path))
    with pytest.raises(PreconditionError, match=f"would {verb} .*installation 'prod'"):
        act(lab)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('ssh_user = "admin"\n', "", 1), "needs ssh_user"),
        (("canary = true\n", "", 1), "at least one agent with canary = true"),
        (
            ('role = "primary"\n', 'role = "primary"\ncanary = true\n', 1),
            "only an agent can be a canary",
        ),
        (
            ('address = "10.1.1.12"\n', 'address = "10.1.1.12"\ncanary = true\n', 1),
            "2 of the 3 agents are canaries",
        ),
        (('jump = "ops@bastion.example.com:2022"', 'jump = "ops@bastion; rm -rf /"', 1), "jump"),
        (("ssh_port = 2222", "ssh_port = 0", 1), "ssh_port"),
    ],
)
def test_a_bad_installation_is_refused_in_one_sentence(
    tmp_path: Path, change: tuple[str, str, int], expected: str
) -> None:
    old, new, count = change
    assert old in INSTALLATION
    with pytest.raises(ConfigError, match=expected) as err:
        _spec(tmp_path, INSTALLATION.replace(old, new, count))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("line", "field"),
    [('ssh_user = "admin"', "ssh_user"), ("canary = true", "canary"), ('jump = "bastion"', "jump")],
)
def test_a_vagrant_lab_refuses_what_only_an_installation_has(
    tmp_path: Path, line: str, field: str
) -> None:
    text = dump_spec(load_spec(None)).replace('role = "agent"\n', f'role = "agent"\n{line}\n')
    with pytest.raises(ConfigError, match=f"sets {field}, which only an installation has"):
        _spec(tmp_path, text)
