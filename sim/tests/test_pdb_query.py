"""labsim's PuppetDB answers AST queries as PuppetDB does (the operators the product and its
tests use; https://puppet.com/docs/puppetdb/latest/ast.html)."""

from __future__ import annotations

from typing import Any

import pytest

from labsim.api.puppetdb import _pql

REPORTS: list[dict[str, Any]] = [
    {"certname": "linux.vm", "receive_time": "2026-12-01T10:00:00Z", "noop": False},
    {"certname": "linux.vm", "receive_time": "2026-12-01T11:00:00Z", "noop": True},
    {"certname": "win.vm", "receive_time": "2026-12-01T12:00:00Z", "noop": None},
]


def matching(query: list[Any]) -> list[int]:
    return [n for n, r in enumerate(REPORTS) if _pql(query, r, REPORTS)]


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ([">", "receive_time", "2026-12-01T10:30:00Z"], [1, 2]),
        (["<", "receive_time", "2026-12-01T11:00:00Z"], [0]),
        ([">=", "receive_time", "2026-12-01T11:00:00Z"], [1, 2]),
        (["<=", "receive_time", "2026-12-01T11:00:00Z"], [0, 1]),
        (
            ["and", ["=", "certname", "linux.vm"], [">", "receive_time", "2026-12-01T10:30:00Z"]],
            [1],
        ),
        (["=", "latest_report?", True], [1, 2]),
        (["not", ["=", "certname", "linux.vm"]], [2]),
        ([">", "missing", 1], []),  # a field with no value matches no comparison
    ],
)
def test_comparisons_and_the_latest_report(query: list[Any], rows: list[int]) -> None:
    assert matching(query) == rows


def test_an_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported operator"):
        matching(["extract", "certname"])
