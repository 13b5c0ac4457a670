"""The suite-wide hooks and fixtures are a plugin, tests/suite.py, that labsim's tests (sim/tests)
load too."""

pytest_plugins = ["tests.suite"]
