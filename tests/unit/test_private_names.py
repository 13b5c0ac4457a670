"""No module of the product imports another module's private name (`_git`, `_remote_sha256`):
what a lower layer offers is public, so import-linter's layers are the whole story. ruff's
PLC2701 lets private imports within one package pass, so this looks at every import itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pe_dr", "tasks", "flows", "deployments", "pe_dr_cli")


def private_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = {
        str(path.relative_to(ROOT)): names
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (names := private_imports(path.read_text()))
    }
    assert offenders == {}


def test_a_private_import_is_found() -> None:
    assert private_imports("from pe_dr.steps.replica import _remote_sha256, remote_owner\n") == [
        "pe_dr.steps.replica._remote_sha256"
    ]
    assert private_imports("from __future__ import annotations\nimport os\n") == []
