"""The real-Puppet lab, started once per test run (see realpuppet.py for how it is built).

`real_puppet` (session): builds the lab in a temp directory, starts both puppetservers at once and
the agent's sshd, and at the end stops every process by PID, proves none is left in the lab's
namespaces and that nothing of the real system changed, and removes the directory. When a test of
the tier failed, the closing summary shows the end of the servers' and sshd's logs;
PE_DR_KEEP_REAL_PUPPET=1 keeps the whole directory for a post-mortem.

`lab` (each test): the product's own `pe_dr.lab.live.Lab` on the lab's spec, with the test stand-in
for `vagrant` first on PATH.

PE_DR_CAPTURE_GOLDEN=1 makes the tests rewrite tests/golden/real-*.txt from this lab's runs
(realpuppet.capture_golden).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from realpuppet import FIGURES, RealPuppetLab, system_snapshot, why_not_runnable

from pe_dr.lab.live import Lab

KEEP_ENV = "PE_DR_KEEP_REAL_PUPPET"
_FAILED: list[str] = []  # tests of this tier that failed: their logs go into the summary
_LOGS: dict[str, str] = {}


SUMMARY_FILE = "real-puppet-summary.json"


@pytest.fixture(scope="session")
def real_puppet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPuppetLab]:
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    before = system_snapshot()
    root = Path(tempfile.mkdtemp(prefix="pe-dr-real-puppet-"))
    root.chmod(0o755)  # the agent's login user (only in its namespace) reads its home and keys
    lab = RealPuppetLab(root / "lab")
    lab.system_before = before
    failed = True
    try:
        lab.build()
        lab.start()
        FIGURES["servers_ready_seconds"] = lab.figures["servers_ready_seconds"]
        yield lab
        failed = False
    finally:
        try:
            lab.close()
        finally:
            FIGURES.update(lab.figures)
            FIGURES["server_starts_seconds"] = {
                s.name: s.starts for s in (lab.primary, lab.replica)
            }
            FIGURES["puppetdb_starts_seconds"] = {
                s.name: s.pdb.starts for s in (lab.primary, lab.replica)
            }
            FIGURES["peak_rss_mib"] = {
                "lab_total_sampled": round(lab.peak_total_kib / 1024),
                "postgresql_sampled": round(lab.peak_postgres_kib / 1024),
                **{s.name: round(s.peak_rss_kib / 1024) for s in (lab.primary, lab.replica)},
                **{
                    f"{s.name} puppetdb": round(s.pdb.peak_rss_kib / 1024)
                    for s in (lab.primary, lab.replica)
                },
            }
            if failed or _FAILED:
                _LOGS.update(lab.log_tails())
            if os.environ.get(KEEP_ENV) == "1":
                _LOGS["kept"] = f"the lab's directory is kept: {root}"
            else:
                shutil.rmtree(root, ignore_errors=True)
            FIGURES["tier_wall_seconds"] = round(time.monotonic() - started, 1)
            # printed by tests/conftest.py: under pytest-xdist this ran in a worker, and the
            # controller, which prints the summary, never loads this conftest
            summary = tmp_path_factory.getbasetemp() / SUMMARY_FILE
            summary.write_text(json.dumps({"figures": FIGURES, "logs": _LOGS}))
    assert system_snapshot() == before, "the real-Puppet lab changed the real system"


@pytest.fixture
def lab(real_puppet: RealPuppetLab, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv(
        "PATH", f"{real_puppet.vagrant_root / 'bin'}{os.pathsep}{os.environ['PATH']}"
    )
    with Lab(real_puppet.spec) as live:
        yield live


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and item.get_closest_marker("real_puppet") is not None:
        _FAILED.append(item.nodeid)
    return report
