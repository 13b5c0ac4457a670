"""The layers, enforced: deployments (CLI) -> flows -> tasks -> pe_dr (core); the core imports no
Prefect; the product imports no labsim (labsim depends on the product, never the reverse).
Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "pe_dr": {"prefect", "tasks", "flows", "deployments", "labsim"},
    "tasks": {"flows", "deployments", "labsim"},
    "flows": {"deployments", "labsim"},
    "deployments": {"labsim"},
}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module `source` imports (absolute imports; relative ones stay in
    their own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(root: Path) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            bad = imported_modules(path.read_text()) & forbidden
            found += [f"{path.relative_to(root)} imports {name}" for name in sorted(bad)]
    return found


def test_the_product_keeps_its_layers() -> None:
    assert violations(REPO) == []


@pytest.mark.parametrize(
    ("package", "line"),
    [
        ("pe_dr", "from prefect import task"),
        ("pe_dr", "import flows.common"),
        ("tasks", "from flows import common"),
        ("flows", "from deployments.cli import main"),
        ("deployments", "import labsim.cli"),
    ],
)
def test_a_layer_violation_is_caught(tmp_path: Path, package: str, line: str) -> None:
    (tmp_path / package).mkdir()
    (tmp_path / package / "mod.py").write_text(f"def f():\n    {line}\n")
    assert violations(tmp_path) == [f"{package}/mod.py imports {line.split()[1].split('.')[0]}"]
