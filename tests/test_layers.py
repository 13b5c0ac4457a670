"""The layers, enforced: the CLI (pe_dr.deployments) -> pe_dr.flows -> pe_dr.tasks -> the core
(the rest of pe_dr); the core imports no Prefect; the product imports no labsim (labsim depends
on the product, never the reverse). Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERED = ("tasks", "flows", "deployments")

# layer -> the modules it must never import (a name and everything below it)
FORBIDDEN = {
    "core": {"prefect", "pe_dr.tasks", "pe_dr.flows", "pe_dr.deployments", "labsim"},
    "tasks": {"pe_dr.flows", "pe_dr.deployments", "labsim"},
    "flows": {"pe_dr.deployments", "labsim"},
    "deployments": {"labsim"},
}


def imported_modules(source: str) -> set[str]:
    """Every module `source` imports, dotted (`from pe_dr import flows` imports pe_dr.flows;
    relative imports stay in their own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(path: Path, package: Path) -> str:
    part = path.relative_to(package).parts[0]
    return part if part in LAYERED else "core"


def violations(root: Path) -> list[str]:
    package = root / "pe_dr"
    found = []
    for path in sorted(package.rglob("*.py")):
        forbidden = FORBIDDEN[layer_of(path, package)]
        bad = {
            f
            for name in imported_modules(path.read_text())
            for f in forbidden
            if name == f or name.startswith(f + ".")
        }
        found += [f"{path.relative_to(root)} imports {name}" for name in sorted(bad)]
    return found


def test_the_product_keeps_its_layers() -> None:
    assert (REPO / "pe_dr" / "flows").is_dir(), "the layers live in the one package"
    assert violations(REPO) == []


@pytest.mark.parametrize(
    ("where", "line", "named"),
    [
        ("steps", "from prefect import task", "prefect"),
        ("oracles", "import pe_dr.flows.common", "pe_dr.flows"),
        ("lab", "from pe_dr import tasks", "pe_dr.tasks"),
        ("tasks", "from pe_dr.flows import common", "pe_dr.flows"),
        ("flows", "from pe_dr.deployments.cli import main", "pe_dr.deployments"),
        ("deployments", "import labsim.cli", "labsim"),
    ],
)
def test_a_layer_violation_is_caught(tmp_path: Path, where: str, line: str, named: str) -> None:
    (tmp_path / "pe_dr" / where).mkdir(parents=True)
    (tmp_path / "pe_dr" / where / "mod.py").write_text(f"def f():\n    {line}\n")
    assert violations(tmp_path) == [f"pe_dr/{where}/mod.py imports {named}"]


def test_a_core_module_may_import_the_core() -> None:
    assert not {"pe_dr.lab.spec", "pe_dr.errors"} & FORBIDDEN["core"]
