"""Suite-wide: the closing summary names every test tier that skipped tests, and why.

A tier is a folder of tests/; tests skip when what their tier needs is missing (root, OpenSSH,
PostgreSQL, Puppet: scripts/install-test-packages.sh installs them), and a skipped tier must be
visible at the end of the run, not only in the `-ra` lines above it.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

TIERS = {
    "core": "core",
    "labsim": "labsim",
    "drill": "labsim drill",
    "deployments": "deployments (Prefect server)",
    "real_puppet": "real Puppet",
}

_collected: Counter[str] = Counter()
_skipped: defaultdict[str, Counter[str]] = defaultdict(Counter)


def _tier(nodeid: str) -> str:
    parts = nodeid.split("::", 1)[0].split("/")
    if len(parts) > 2 and parts[0] == "tests":
        return TIERS.get(parts[1], parts[1])
    return "other"


def pytest_collection_finish(session: pytest.Session) -> None:
    _collected.clear()
    _collected.update(_tier(item.nodeid) for item in session.items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    _skipped[_tier(report.nodeid)][reason.removeprefix("Skipped: ").strip()] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
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
            f"{tier}: {count} of {_collected[tier]} tests skipped because {why}"
        )


def _ordered(tiers: object) -> list[str]:
    names = list(tiers)  # type: ignore[call-overload]
    order = list(TIERS.values())
    return sorted(names, key=lambda t: (order.index(t) if t in order else len(order), t))
