"""What each wheel ships: the product's has no labsim (labsim depends on the product, never the
reverse); labsim's is its own distribution, with its command. Built here, offline, in well
under a second."""

from __future__ import annotations

import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _wheel(project: Path, tmp: Path) -> zipfile.ZipFile:
    from hatchling.builders.wheel import WheelBuilder

    (path,) = WheelBuilder(str(project)).build(directory=str(tmp), versions=["standard"])
    return zipfile.ZipFile(path)


def _info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return _wheel(REPO, tmp_path_factory.mktemp("product"))


def test_the_product_wheel_ships_no_labsim(product: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in product.namelist()}
    # the core and the design card's top-level layers, the CLI's home
    layers = {"pe_dr", "tasks", "flows", "deployments", "pe_dr_cli"}
    assert tops == {*layers, "pe_dr_drill-0.1.0.dist-info"}
    assert {"flows/dr_drill.py", "deployments/flow_process.py"} <= set(product.namelist())
    assert not [n for n in product.namelist() if "labsim" in n.lower()]
    metadata = Parser().parsestr(_info(product, "METADATA"))
    assert not [r for r in metadata.get_all("Requires-Dist") or [] if "labsim" in r]
    assert metadata.get_all("Provides-Extra") is None
    assert "labsim" not in _info(product, "entry_points.txt")
    assert "pe_dr_cli/main.py" in product.namelist()


def test_labsim_is_a_distribution_of_its_own_on_top_of_the_product(tmp_path: Path) -> None:
    wheel = _wheel(REPO / "sim", tmp_path)
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {"labsim", "labsim-0.1.0.dist-info"}
    assert {"labsim/cli.py", "labsim/drill.py", "labsim/daemon.py"} <= set(wheel.namelist())
    metadata = Parser().parsestr(_info(wheel, "METADATA"))
    requires = {r.split("<")[0].split(">")[0].strip() for r in metadata.get_all("Requires-Dist")}
    assert {"pe-dr-drill", "asyncssh", "cryptography"} <= requires
    assert "labsim = labsim.cli:main" in _info(wheel, "entry_points.txt")
