"""Suite-wide (a plugin that tests/conftest.py and sim/tests/conftest.py load): the closing
summary names every test tier that skipped tests, and why; and the tiers that share an expensive
fixture run on one worker each (`make test` runs two).

A tier is a folder of tests/, or labsim's own tests (sim/tests: the tier "labsim", named below
as if it were tests/labsim); tests skip when what their tier needs is missing (root, OpenSSH,
PostgreSQL, Puppet: scripts/install-test-packages.sh installs them), and a skipped tier must be
visible at the end of the run, not only in the `-ra` lines above it.

Most of the suite waits (on labsim's modelled durations, on a JVM, on a Prefect server), so two
pytest-xdist workers halve its wall time (three, tried, made the failover drills' stop tests
flaky on two cores); `--dist loadgroup` keeps each tier whose tests share a session fixture (the
built lab, the real puppetservers on fixed loopback addresses, the PostgreSQL and Prefect
servers) on one worker, so no fixture is built twice.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from labsim.testing import migrate_prefect_database

TIERS = {
    "unit": "core",
    "labsim": "labsim",  # sim/tests
    "flows": "labsim drill",
    "deployments": "deployments (Prefect server)",
    "real_puppet": "real Puppet",
    "netns": "network namespaces (nftables)",
}

# tier folder (or test module, by its path below tests/) -> the xdist group of its tests (the
# rest spread over the workers).
# "system": what changes the real machine (a login user for sshd in test_host; the real-Puppet
# tier, which checks that nothing of the real system changed while it ran) runs on one worker.
# The drill modules that never use the shared built lab get a group of their own, so that they
# can run beside it (the drill tier is the suite's longest pole).
GROUPS = {
    "flows/test_cli.py": "labsim-drill-own",
    "flows/test_lab_lock.py": "labsim-drill-own",
    "flows/test_kill_switch.py": "labsim-drill-own",
    "flows/test_promotion.py": "labsim-drill-own",
    "flows/test_task_policy.py": "labsim-drill-own",
    "flows": "labsim-drill",
    # the history and notification tests (4 min) on a server of their own, beside the others
    "deployments/test_history_runs.py": "prefect-servers-2",
    "deployments/test_notify.py": "prefect-servers-2",
    "deployments": "prefect-servers",
    "real_puppet": "system",
    "netns": "system",  # namespaces of its own: never beside the check that nothing changed
    "unit/lab/test_host.py": "system",
    "labsim/test_drill_command.py": "labsim-drill-command",
    "labsim": "labsim",
}


@pytest.fixture(scope="session")
def migrated_prefect_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect SQLite database migrated once per worker: the temporary server of a `pe-dr`
    command on a fresh PREFECT_HOME would spend about 10 s of CPU migrating its own."""
    home = tmp_path_factory.mktemp("prefect-template")
    migrate_prefect_database(PREFECT_HOME=str(home))
    return home / "prefect.db"


@pytest.fixture
def prefect_home(tmp_path: Path, migrated_prefect_db: Path) -> Path:
    """A fresh PREFECT_HOME for a `pe-dr` command, its database already migrated."""
    home = tmp_path / "prefect"
    home.mkdir()
    shutil.copyfile(migrated_prefect_db, home / "prefect.db")
    return home


# Counted from the reports, which reach the controlling process under xdist too (collection does
# not happen there).
_collected: defaultdict[str, set[str]] = defaultdict(set)
_skipped: defaultdict[str, Counter[str]] = defaultdict(Counter)


def _parts(nodeid: str) -> list[str]:
    """A test's path below tests/ as parts; labsim's tests count as the folder tests/labsim."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("sim/tests/"):
        path = "tests/labsim/" + path.removeprefix("sim/tests/")
    return path.split("/")


def _tier(nodeid: str) -> str:
    parts = _parts(nodeid)
    if len(parts) > 2 and parts[0] == "tests":
        return TIERS.get(parts[1], parts[1])
    return "other"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = _parts(item.nodeid)
        if len(parts) < 3 or parts[0] != "tests":
            continue
        group = GROUPS.get("/".join(parts[1:])) or GROUPS.get(parts[1])
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "setup":
        _collected[_tier(report.nodeid)].add(report.nodeid)
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    _skipped[_tier(report.nodeid)][reason.removeprefix("Skipped: ").strip()] += 1


REAL_PUPPET_SUMMARY = "real-puppet-summary.json"  # written by tests/real_puppet/conftest.py


def _real_puppet_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The real-Puppet tier's figures and, when it failed, its servers' logs; its session fixture
    wrote them beside its basetemp (an xdist worker's is below the controller's)."""
    base = terminalreporter.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    for path in sorted([*base.glob(REAL_PUPPET_SUMMARY), *base.glob(f"*/{REAL_PUPPET_SUMMARY}")]):
        written = json.loads(path.read_text())
        terminalreporter.write_sep("-", "real-Puppet tier figures")
        for key, value in written["figures"].items():
            terminalreporter.write_line(f"{key}: {value}")
        for name, text in written["logs"].items():
            terminalreporter.write_sep("-", f"real-Puppet lab: {name}")
            terminalreporter.write_line(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _real_puppet_summary(terminalreporter)
    if not _collected:
        return
    terminalreporter.write_sep("-", "test tiers")
    if not _skipped:
        terminalreporter.write_line(f"no tier skipped tests ({', '.join(_ordered(_collected))})")
        return
    for tier in _ordered(_skipped):
        reasons = _skipped[tier]
        count = sum(reasons.values())
        why = "; ".join(
            reason if len(reasons) == 1 else f"{reason} ({n})"
            for reason, n in reasons.most_common()
        )
        terminalreporter.write_line(
            f"{tier}: {count} of {len(_collected[tier])} tests skipped because {why}"
        )


def _ordered(tiers: object) -> list[str]:
    names = list(tiers)  # type: ignore[call-overload]
    order = list(TIERS.values())
    return sorted(names, key=lambda t: (order.index(t) if t in order else len(order), t))
