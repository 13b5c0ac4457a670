"""The canary drill's kill switch (issue 26.3): one Prefect variable, set by `pe-dr kill-switch` or
in the Prefect UI, that stops every canary drill and keeps new ones from starting. Only the
Prefect test server is needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.variables import Variable

from flows import kill_switch
from flows import preflight as flow_preflight
from pe_dr import preflight as core
from pe_dr.lab.spec import LabSpec, load_spec
from pe_dr_cli.main import main
from tests.unit.lab.test_installation import INSTALLATION


@pytest.fixture
def switch(prefect_server: None) -> Iterator[None]:
    Variable.unset(kill_switch.VARIABLE)
    yield
    Variable.unset(kill_switch.VARIABLE)


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabSpec:
    path = tmp_path / "prod.toml"
    path.write_text(INSTALLATION)
    # no SSH here: the installation's hosts are addresses of a network this test never reaches
    monkeypatch.setattr(core, "on_the_lab", lambda spec, needs: core.Outcome())
    return load_spec(path)


def _canary_problems(spec: LabSpec, flow: str = "canary-drill") -> list[str]:
    needs = core.needs_for(flow, spec, confirm=[h.name for h in spec.canaries])
    return flow_preflight.check(spec, needs).problems


def test_on_from_the_command_line_names_who_and_why_and_stops_canary_drills(
    switch: None, installation: LabSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kill_switch.engaged() is None
    assert _canary_problems(installation) == []
    assert main(["kill-switch", "on", "--reason", "pager  says\tstop"]) == 0
    said = kill_switch.engaged()
    assert said is not None and said.endswith(": pager says stop") and "@" in said
    assert "ON: the kill switch was turned on at" in capsys.readouterr().out
    (problem,) = _canary_problems(installation)
    assert problem == f"{said}: no canary drill starts until `pe-dr kill-switch off`"
    assert _canary_problems(installation, flow="replication-check") == []  # the lab drills go on
    assert main(["kill-switch"]) == 0 and f"ON: {said}" in capsys.readouterr().out
    assert main(["kill-switch", "off"]) == 0
    assert kill_switch.engaged() is None and _canary_problems(installation) == []
    assert main(["kill-switch", "off"]) == 0 and "(it was not on)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "on"), [("on", True), ({"x": 1}, True), ("off", False), (False, False)]
)
def test_the_ui_turns_it_on_by_creating_the_variable(switch: None, value: object, on: bool) -> None:
    Variable.set(kill_switch.VARIABLE, value, overwrite=True)  # the Variables page does this
    said = kill_switch.engaged()
    assert (said is not None) is on
    if on:
        assert (
            said == f"the kill switch is on (the Prefect variable pe-dr-kill-switch is {value!r})"
        )


def test_a_reason_that_is_not_one_line_is_refused(
    switch: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kill-switch", "on", "--reason", "x" * 201]) == 2
    assert "--reason: one line of at most 200 printable characters" in capsys.readouterr().err
    assert kill_switch.engaged() is None
