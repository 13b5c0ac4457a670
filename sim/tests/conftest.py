"""labsim's tests, beside labsim. The suite's tiers, xdist groups and shared fixtures (a migrated
Prefect database) are the plugin tests/suite.py, which tests/conftest.py loads too."""

from __future__ import annotations

import sys
from pathlib import Path

pytest_plugins = ["tests.suite"]

sys.path.insert(0, str(Path(__file__).parent))  # driver.py, the tests' PE admin
