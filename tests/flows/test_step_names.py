"""A step's name in the journal, whatever moment a stop signal caught its task run at."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flows.journal import step_name


def _run(name: str, dynamic_key: str) -> Any:
    return SimpleNamespace(name=name, dynamic_key=dynamic_key)


def test_a_run_stopped_before_prefect_named_it_is_still_its_step() -> None:
    # a CI run's SIGTERM landed between the task run's creation and its renaming
    assert step_name(_run("measure-failover-e32", "e32f0c1d9a")) == "measure-failover"
    assert step_name(_run("halt-primary-0", "0")) == "halt-primary"


def test_a_named_run_keeps_its_name() -> None:
    assert step_name(_run("measure-failover", "e32f0c1d9a")) == "measure-failover"
    assert step_name(_run("vm-up primary.vm", "3")) == "vm-up primary.vm"
    assert step_name(_run("destroy replica.vm", "")) == "destroy replica.vm"
