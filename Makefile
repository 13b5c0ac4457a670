# Every target creates the virtual environment itself: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.9.9

.PHONY: venv drill test test-fast check bench clean

# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set (this CI), every process
# (each Prefect server, flow run, pe-dr or labsim command) compiled all it imported, anew.
$(BIN)/.synced: pyproject.toml sim/pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv sync --frozen --inexact --active --quiet --compile-bytecode
	$(BIN)/python -m compileall -q -j 0 pe_dr tasks flows deployments pe_dr_cli sim/labsim
	touch $@

venv: $(BIN)/.synced

drill: venv
	$(BIN)/labsim drill

# Every tier, the real-Puppet one included; the script installs the Debian packages they need
# when run as root, and otherwise names the missing ones (their tiers then skip).
test: venv
	scripts/install-test-packages.sh
	$(BIN)/pytest -q -n 2 --dist loadgroup --durations=15

test-fast: venv
	$(BIN)/pytest -q -m 'not slow'

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports  # the layers: pyproject.toml [tool.importlinter]

bench: venv
	$(BIN)/python -m benchmarks.task_overhead
	$(BIN)/python -m benchmarks.drill_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
