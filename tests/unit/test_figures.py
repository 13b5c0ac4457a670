"""The figures' registry (pe_dr/figures.py) drives every place a figure appears: a figure added
to a registry is a Budgets field with its default, bounds and title, the journal records it from
the check the registry names, and the report lists it beside its budget."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from flows import journal, params
from pe_dr import history
from pe_dr.checks.result import CheckResult
from pe_dr.figures import REGISTRY, Figure, Registry
from pe_dr.report import DrillReport

EXTRA = Figure(
    "canary_seconds",
    "canary",
    "canary_check",
    42.0,
    "The canary's block → the agent notices.",
    at_most=100.0,
)
SIDE = Figure(
    "canary_side_seconds",
    "canary side",
    "canary_check",
    5.0,
    "A second figure.",
    check_seconds=False,
)
BUDGET_ONLY = Figure("canary_settle_seconds", "canary-settle", "canary_settle", 9.0, "Settles.",
                     recorded=False)  # fmt: skip


def test_a_figure_added_to_a_registry_is_a_budget_a_journal_figure_and_a_report_row() -> None:
    registry = Registry((*REGISTRY.figures, EXTRA, SIDE, BUDGET_ONLY))
    model = params.budgets_model(registry)
    # the budget: a field of the form with the registry's default, title, description, bounds
    field = model.model_json_schema()["properties"]["canary_seconds"]
    assert field["default"] == 42.0
    assert field["title"] == "Canary budget (s)"
    assert field["description"] == EXTRA.description
    assert (field["exclusiveMinimum"], field["maximum"]) == (0, 100.0)
    with pytest.raises(ValidationError):
        model(canary_seconds=101)
    with pytest.raises(ValidationError):
        model(canary_seconds=0)
    assert "canary_settle_seconds" in model.model_fields
    budgets = model(canary_seconds=30)
    # the journal: the check the registry names measured it; a budget-only figure is not kept
    report = DrillReport(flow="dr-drill", flow_run_id="r", lab={"name": "lab"})
    report.budgets = {k: float(getattr(budgets, k)) for k in registry.keys}
    check = CheckResult("canary_check", True, "ok", seconds=12.5, figures={SIDE.key: 1.5})
    journal.record_figures(report, check, registry)
    journal.record_figures(report, CheckResult("canary_settle", True, "ok", seconds=3.0), registry)
    assert report.measurements["canary_seconds"] == 12.5
    assert report.measurements["canary_side_seconds"] == 1.5
    assert "canary_settle_seconds" not in report.measurements
    # the report: a row beside its budget and the margin left
    rows = {r["figure"]: r for r in report.figures(registry)}
    assert rows["canary_seconds"] == {
        "figure": "canary_seconds",
        "seconds": 12.5,
        "budget": 30.0,
        "margin": 17.5,
    }
    assert "canary_settle_seconds" not in rows


def test_the_registry_is_what_the_parameters_journal_report_and_history_read() -> None:
    assert list(params.Budgets.model_fields) == [f.key for f in REGISTRY.budgets]
    assert [r["figure"] for r in DrillReport("f", "r", {}).figures()] == list(REGISTRY.keys)
    head = history.table([])[0]
    assert all(label in head for label in REGISTRY.labels.values())
    # the form's defaults are the registry's
    defaults = params.Budgets()
    assert all(getattr(defaults, f.key) == f.default for f in REGISTRY.budgets)


def test_a_check_measures_only_the_figures_the_registry_gives_it() -> None:
    report = DrillReport(flow="dr-drill", flow_run_id="r", lab={"name": "lab"})
    # a figure named by another check's result is not taken: the registry says who measures it
    journal.record_figures(
        report, CheckResult("failover", True, "ok", seconds=7.0, figures={"rpo_seconds": 1.0})
    )
    assert report.measurements["rto_seconds"] == 7.0
    assert report.measurements["rpo_seconds"] is None
    # a check that measured nothing leaves the figure unknown
    journal.record_figures(report, CheckResult("replication", False, "late"))
    assert report.measurements["replication_lag_seconds"] is None


def test_every_figure_names_a_check_and_a_positive_default_within_its_bounds() -> None:
    keys = [f.key for f in REGISTRY.figures]
    assert len(keys) == len(set(keys))
    for f in REGISTRY.figures:
        assert f.check and f.description and f.label
        assert f.above < f.default <= f.at_most
        assert dataclasses.replace(f, budget_title="").title.endswith(f"budget ({f.unit})")
