"""LabSpec: tutorial defaults, TOML round trip, and one-sentence errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_dr.errors import ConfigError
from pe_dr.lab.spec import SPEC_ENV, HostSpec, LabSpec, Role, dump_spec, load_spec


def test_defaults_are_the_tutorials_lab() -> None:
    spec = LabSpec()
    assert (spec.primary.name, spec.primary.address) == ("primary.vm", "192.168.50.4")
    assert (spec.replica.name, spec.replica.address) == ("replica.vm", "192.168.50.41")
    assert (spec.gitlab.name, spec.gitlab.address) == ("gitlab.vm", "192.168.50.7")
    assert [a.name for a in spec.agents] == ["linux.vm"]
    assert spec.gitlab_url == "http://gitlab.vm"
    assert spec.control_repo_remote == "git@gitlab.vm:root/control-repo.git"
    assert spec.address_map["replica.vm"] == "192.168.50.41"


def test_toml_round_trip(tmp_path: Path) -> None:
    spec = LabSpec(
        name="lab-two",
        vagrant_root=str(tmp_path),
        gitlab_http_port=8080,
        hosts=[
            HostSpec(name="p.vm", role=Role.PRIMARY, address="127.9.9.4"),
            HostSpec(name="r.vm", role=Role.REPLICA, address="127.9.9.41"),
            HostSpec(name="a1.vm", role=Role.AGENT, address="127.9.9.6"),
            HostSpec(name="a2.vm", role=Role.AGENT, address="127.9.9.8"),
            HostSpec(name="g.vm", role=Role.GITLAB, address="127.9.9.7"),
        ],
    )
    path = tmp_path / "lab.toml"
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec
    assert load_spec(path).gitlab_url == "http://g.vm:8080"


def test_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(dump_spec(LabSpec(name="from-env")))
    monkeypatch.setenv(SPEC_ENV, str(path))
    assert load_spec().name == "from-env"
    monkeypatch.delenv(SPEC_ENV)
    assert load_spec().name == "puppet-upandrun"


def test_relative_vagrant_root_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('vagrant_root = "lab"\n')
    (tmp_path / "lab").mkdir()
    assert load_spec(path).vagrant_root == str(tmp_path / "lab")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[hosts]]\nname = "p.vm"\nrole = "primary"\naddress = "1.2.3"\n',
            "hosts.0.address: '1.2.3' is not an IP address",
        ),
        ('name = "Bad Name"\n', "name: String should match pattern"),
        ("surprise = 1\n", "surprise: Extra inputs are not permitted"),
        ('[[hosts]]\nname = "p.vm"\nrole = "boss"\naddress = "10.0.0.1"\n', "hosts.0.role:"),
        ("gitlab_http_port = 0\n", "gitlab_http_port: Input should be greater than or equal to 1"),
        ("name = \n", "is not valid TOML"),
    ],
)
def test_bad_file_gives_one_sentence_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    message = str(err.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_roles_are_validated(tmp_path: Path) -> None:
    hosts = LabSpec().hosts
    no_replica = [h for h in hosts if h.role is not Role.REPLICA]
    with pytest.raises(ValueError, match=r"exactly one replica"):
        LabSpec(hosts=no_replica)
    with pytest.raises(ValueError, match=r"listed twice"):
        LabSpec(hosts=[*hosts, hosts[2]])
    no_agent = [h for h in hosts if h.role is not Role.AGENT]
    with pytest.raises(ValueError, match=r"at least one agent"):
        LabSpec(hosts=no_agent)


def test_missing_file_and_unknown_vm() -> None:
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_spec("/nonexistent/lab.toml")
    with pytest.raises(ConfigError, match=r"'db\.vm' is not a VM"):
        LabSpec().host("db.vm")
    assert LabSpec().host("replica").name == "replica.vm"
