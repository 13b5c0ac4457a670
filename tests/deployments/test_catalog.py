"""The deployment catalog: names, tags, schedule, the UI form each deployment renders, and the
committed prefect.yaml, which must be exactly what the catalog generates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import catalog as cat
from pe_dr.errors import ConfigError
from pe_dr_cli.main import main

REPO = Path(__file__).resolve().parents[2]
SECRET_WORDS = ("password", "passwd", "token", "secret", "key", "credential")


@pytest.fixture(autouse=True)
def _defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (cat.CRON_ENV, cat.TIMEZONE_ENV, cat.WORK_POOL_ENV, "PE_DR_LAB_SPEC"):
        monkeypatch.delenv(name, raising=False)


def test_every_flow_has_a_deployment_named_for_what_it_does_and_the_drill_a_monthly_one() -> None:
    names = [d.full_name for d in cat.catalog()]
    assert names == [
        "dr-drill/monthly",
        "dr-drill/on-demand",
        "lab-setup/bring-up",
        "code-manager-setup/configure",
        "replica-activation/enable-replica",
        "replication-check/measure-lag",
        "failover-drill/halt-primary",
        "promotion/promote-replica",
        "reprotect/rebuild-replica",
        "teardown/destroy-vms",
    ]
    for d in cat.catalog():
        assert d.load_flow().name == d.flow_name
        assert "pe-dr" in d.tags and "expected:success" in d.tags
        assert ("scheduled:monthly" in d.tags) == (d.cron is not None)
        assert ("monthly" in d.description.lower()) == (d.cron is not None), d.full_name


def test_a_run_by_hand_that_halts_or_destroys_asks_for_approval_and_the_monthly_one_does_not() -> (
    None
):
    for d in cat.catalog():
        destructive = any(t.startswith("destructive:") for t in d.tags)
        asks = d.parameters.get("parameters", {}).get("approval")
        if d.cron is not None:
            assert asks == "none", "the monthly drill needs no human"
        else:
            assert asks == ("ask" if destructive else None), d.full_name


def test_the_monthly_drill_may_halt_the_primary_but_never_destroys() -> None:
    monthly = cat.find("dr-drill/monthly")
    assert (monthly.cron, monthly.timezone) == ("0 3 1 * *", "UTC")
    assert monthly.parameters == {
        # both PE servers: a promotion swaps which one is the primary the drill halts
        "parameters": {
            "confirm": ["primary.vm", "replica.vm"],
            "promote": False,
            "approval": "none",
        }
    }
    assert "destructive:halt-primary" in monthly.tags
    assert "destructive:destroys-vms" not in monthly.tags
    for name in ("promotion/promote-replica", "teardown/destroy-vms"):
        assert "destructive:destroys-vms" in cat.find(name).tags


def test_the_schedule_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cat.CRON_ENV, "30 2 * * 0")
    monkeypatch.setenv(cat.TIMEZONE_ENV, "Europe/Berlin")
    monthly = cat.find("dr-drill/monthly")
    assert (monthly.cron, monthly.timezone) == ("30 2 * * 0", "Europe/Berlin")
    monkeypatch.setenv(cat.TIMEZONE_ENV, "Mars/Olympus")
    with pytest.raises(ConfigError, match="PE_DR_DRILL_TIMEZONE='Mars/Olympus'"):
        cat.catalog()
    monkeypatch.setenv(cat.CRON_ENV, "every month")
    with pytest.raises(ConfigError, match="PE_DR_DRILL_CRON='every month'"):
        cat.catalog()


def _fields(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every property of every object in the schema, with its owner's name."""
    objects = [("parameters", schema), *schema.get("definitions", {}).items()]
    for owner, obj in objects:
        for name, prop in obj.get("properties", {}).items():
            yield owner, name, prop


@pytest.mark.parametrize("definition", cat.catalog(), ids=lambda d: d.full_name)
def test_the_run_form_describes_every_field_and_asks_for_no_secret(
    definition: cat.DeploymentDef,
) -> None:
    deployment = definition.to_deployment()
    schema = deployment._parameter_openapi_schema.model_dump()
    assert list(schema["properties"]) == ["parameters"], "one parameter model per flow"
    fields = list(_fields(schema))
    assert len(fields) > 10
    for owner, name, prop in fields:
        if owner == "parameters":
            continue  # the model itself: its docstring describes it
        assert prop.get("description"), f"{owner}.{name} has no description"
        assert not any(word in name.lower() for word in SECRET_WORDS), f"{owner}.{name}"
        if "$ref" not in prop:  # (a nested model is titled by its own definition)
            title = prop.get("title", "")
            assert title and "_" not in title, f"{owner}.{name}: its label is {title!r}"
            if "_" in name:  # pydantic's own label would be "Rto Seconds"
                assert title != name.replace("_", " ").title(), f"{owner}.{name}: {title!r}"
    assert deployment.description == definition.description
    assert deployment.tags == list(definition.tags)


def test_form_labels_read_as_words() -> None:
    schema = cat.find("dr-drill/on-demand").to_deployment()._parameter_openapi_schema.model_dump()
    labels = {name: prop["title"] for _, name, prop in _fields(schema) if "title" in prop}
    assert labels["rto_seconds"] == "RTO budget (s)"
    assert labels["approval_timeout_seconds"] == "Approval timeout (s)"
    assert labels["confirm"] == "VMs it may halt or destroy"


def test_confirm_is_a_choice_of_the_lab_spec_s_vms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def choices() -> dict[str, Any]:
        schema = cat.find("failover-drill/halt-primary").to_deployment()
        definitions = schema._parameter_openapi_schema.model_dump()["definitions"]
        confirm: dict[str, Any] = definitions["FailoverParameters"]["properties"]["confirm"]
        return confirm

    tutorial = choices()  # no PE_DR_LAB_SPEC: the tutorial's lab
    assert tutorial["type"] == "array" and tutorial["uniqueItems"] is True
    assert tutorial["items"] == {
        "type": "string",
        "enum": ["primary.vm", "replica.vm", "linux.vm", "gitlab.vm"],
    }
    spec = tmp_path / "lab.toml"
    spec.write_text(
        'name = "other"\n'
        + "".join(
            f'[[hosts]]\nname = "{n}"\nrole = "{r}"\naddress = "10.0.0.{i}"\n'
            for i, (n, r) in enumerate(
                [
                    ("pe1.lab", "primary"),
                    ("pe2.lab", "replica"),
                    ("a1.lab", "agent"),
                    ("git.lab", "gitlab"),
                ],
                start=1,
            )
        )
    )
    monkeypatch.setenv("PE_DR_LAB_SPEC", str(spec))
    assert choices()["items"]["enum"] == ["pe1.lab", "pe2.lab", "a1.lab", "git.lab"]
    assert cat.find("dr-drill/monthly", None).parameters["parameters"]["confirm"] == [
        "pe1.lab",
        "pe2.lab",
    ]


def test_prefect_yaml_is_generated_from_the_catalog() -> None:
    committed = (REPO / "prefect.yaml").read_text()
    assert committed == cat.prefect_yaml(), "run: pe-dr deployments yaml > prefect.yaml"
    document = yaml.safe_load(committed)
    assert document["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PE_DR_HOME }}"}}
    ]
    assert [d["name"] for d in document["deployments"]] == [d.name for d in cat.catalog()]
    assert {d["work_pool"]["name"] for d in document["deployments"]} == {"pe-dr-lab"}
    assert document["deployments"][0]["schedules"] == [
        {"cron": "0 3 1 * *", "timezone": "UTC", "active": True}
    ]


def test_the_yaml_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deployments", "yaml", "--work-pool", "team-pool"]) == 0
    assert "name: team-pool" in capsys.readouterr().out


def test_serve_and_setup_refuse_without_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve"]) == 2
        assert main(["setup"]) == 2
    assert "needs a Prefect server" in capsys.readouterr().err
