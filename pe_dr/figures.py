"""The drill's figures, each named once: its key, its label, its unit, the check that measures it,
its budget's default and bounds, and what it measures.

Everything else reads this registry: the flows' Budgets parameter (its fields, defaults,
titles and bounds: flows/params.py), the journal (which check's result is which figure:
flows/journal.py), the report and its HTML page (pe_dr/report.py, report_html.py), the history
and its chart (pe_dr/history.py) and `pe-dr history`. A new figure is one entry below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

BUDGET_MAX_SECONDS = 7 * 24 * 3600.0  # a DR drill's figure is minutes or hours, never weeks


class Measured(Protocol):
    """What a check's result offers (pe_dr.checks.result.CheckResult)."""

    @property
    def name(self) -> str: ...
    @property
    def seconds(self) -> float | None: ...
    @property
    def figures(self) -> Mapping[str, float | None]: ...


@dataclass(frozen=True)
class Figure:
    key: str  # the journal's, the history's and the Budgets parameter's name for it
    label: str  # how the report, the history and the chart name it
    check: str  # the check that measures it (CheckResult.name)
    default: float  # its budget's default, in `unit`
    description: str  # what it measures, from when to when (the UI form shows it)
    unit: str = "s"
    # where the check puts it: its own `seconds`, or (False) its `figures[key]`
    check_seconds: bool = True
    # a figure of the record; False: a budget only (the check's time is not kept)
    recorded: bool = True
    above: float = 0  # its budget must be greater than this
    at_most: float = BUDGET_MAX_SECONDS  # and at most this
    budget_title: str = ""  # the form's title, when not "<Label> budget (<unit>)"

    @property
    def title(self) -> str:
        return self.budget_title or f"{self.label[:1].upper()}{self.label[1:]} budget ({self.unit})"


@dataclass(frozen=True)
class Registry:
    figures: tuple[Figure, ...]

    @property
    def budgets(self) -> tuple[Figure, ...]:
        """Every figure with a budget, in the form's order."""
        return self.figures

    @property
    def keys(self) -> tuple[str, ...]:
        """The figures of the record, in the report's order."""
        return tuple(f.key for f in self.figures if f.recorded)

    @property
    def labels(self) -> dict[str, str]:
        return {f.key: f.label for f in self.figures if f.recorded}

    def measured_by(self, check: Measured) -> dict[str, float | None]:
        """The figures of the record a check's result measured, by key."""
        return {
            f.key: check.seconds if f.check_seconds else check.figures.get(f.key)
            for f in self.figures
            if f.recorded and f.check == check.name
        }


REGISTRY = Registry(
    (
        Figure(
            "rto_seconds",
            "RTO",
            "failover",
            900.0,
            "Primary down → first agent run served by the replica.",
        ),
        Figure(
            "replication_lag_seconds",
            "replication lag",
            "replication",
            300.0,
            "Push to the control repo → change live on the replica.",
        ),
        Figure(
            "failback_seconds",
            "failback",
            "failback",
            900.0,
            "Primary back → first agent run served by it again.",
        ),
        Figure(
            "steady_state_seconds",
            "steady-state",
            "steady_state",
            600.0,
            "After failback → every PE service running, no error alert.",
            recorded=False,
        ),
        Figure(
            "rpo_seconds",
            "RPO",
            "replica_serves",
            300.0,
            "Worst database-replicated store (classifier, RBAC): the primary goes down → the "
            "newest write the replica serves was acknowledged this long before (what a lost "
            "primary loses).",
        ),
        Figure(
            "replication_latency_seconds",
            "replication latency",
            "replica_serves",
            60.0,
            "Both servers up: a write on the primary → served by the replica (classifier, RBAC).",
            check_seconds=False,
        ),
        Figure(
            "puppetdb_sync_seconds",
            "PuppetDB sync age",
            "replica_serves",
            600.0,
            "Age of the replica PuppetDB's last successful sync when the primary goes down (PE "
            "syncs every 2 minutes by default).",
            check_seconds=False,
            budget_title="PuppetDB sync budget (s)",
        ),
        Figure(
            "promotion_seconds",
            "promotion",
            "promotion",
            1800.0,
            "The old primary destroyed → every agent compiles from the promoted replica.",
        ),
        Figure(
            "reprotect_seconds",
            "reprotect",
            "reprotect",
            7200.0,
            "After a promotion: the lost VM rebuilt → it is the new primary's enabled replica "
            "and agents name it.",
        ),
    )
)

# the registry's views, for the modules that read them
MEASUREMENTS = REGISTRY.keys
FIGURE_NAMES = REGISTRY.labels
