"""parse_agent_run against real agent runs: tests/golden/real-*.txt, captured by the real-Puppet
tier (tests/real_puppet, PE_DR_CAPTURE_GOLDEN=1) from puppet-agent 7.23.0 and puppetserver 7.9.5
of Debian 12, colours as printed, stdout and stderr merged. Each .source names the case and the
exit code the run ended with.

Every golden file's runs contain the 18 `Error: Facter: Permission denied @ rb_sysopen -
/proc/1/environ` lines of the gVisor sandbox they were captured in (except the run that never got
to facts); they are real Error: lines in runs that applied their catalog, so they are evidence, not
failure, and the cases below say which other errors a run holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pe_dr.parsing.agent import AgentRun, DownKind, parse_agent_run

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
SANDBOX_ERROR = "Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ"
CURRENT, PREVIOUS, FAILING_FACT = "2a9d75ee6a7", "790ab0de58b", "3677e08bf49"  # the lab's commits


@dataclass(frozen=True)
class Case:
    served_by: str | None
    commit: str | None
    troubles: tuple[tuple[str, DownKind], ...] = ()
    waited: tuple[tuple[float, float] | None, ...] = ()  # (at least, below) seconds per trouble
    errors: tuple[str, ...] = ()  # fragments of Error: lines other than the sandbox's


CASES = {
    "both-up": Case("primary", CURRENT),
    "server-list-replica": Case("replica", CURRENT),
    "failing-fact": Case(
        "primary",
        FAILING_FACT,
        errors=(
            "Error: Facter: Error while resolving custom fact fact='pedr_failing_fact', "
            "resolution='<anonymous>': pe-dr-drill: this custom fact fails on purpose",
        ),
    ),
    "stale-replica": Case("replica", PREVIOUS),
    "refused-primary": Case(
        "replica", CURRENT, (("primary.vm:8140", DownKind.REFUSED),), ((0.0, 0.5),)
    ),
    "hung-primary": Case("replica", CURRENT, (("primary.vm:8140", DownKind.HUNG),), ((3.0, 5.0),)),
    "hung-listener": Case("replica", CURRENT, (("primary.vm:8140", DownKind.HUNG),), ((3.0, 5.0),)),
    "silent-primary": Case(
        "replica", CURRENT, (("primary.vm:8140", DownKind.SILENT),), ((3.0, 5.0),)
    ),
    "503-primary": Case("replica", CURRENT, (("primary.vm:8140", DownKind.UNAVAILABLE),), (None,)),
    "both-down": Case(
        None,
        None,
        (("primary.vm:8140", DownKind.REFUSED), ("replica.vm:8140", DownKind.HUNG)),
        ((0.0, 0.5), (3.0, 5.0)),
        errors=(
            "Error: Unable to connect to server from server_list setting: Request to "
            "https://replica.vm:8140/status/v1/simple/server timed out connect operation after",
            "Error: Could not run Puppet configuration client: Could not select a functional "
            "puppet server from server_list: 'primary.vm:8140,replica.vm:8140'",
        ),
    ),
}


def _golden(case: str) -> tuple[str, int]:
    text = (GOLDEN / f"real-{case}.txt").read_text(encoding="utf-8")
    source = (GOLDEN / f"real-{case}.txt.source").read_text(encoding="utf-8")
    code = re.search(r"^exit code: (\d+)$", source, re.MULTILINE)
    assert code, f"real-{case}.txt.source does not say the exit code"
    return text, int(code.group(1))


def test_every_real_golden_file_is_asserted_here() -> None:
    on_disk = {p.name.removeprefix("real-").removesuffix(".txt") for p in GOLDEN.glob("real-*.txt")}
    assert on_disk == set(CASES)


def test_real_golden_files_are_real_captures() -> None:
    for case in CASES:
        text, _ = _golden(case)
        source = (GOLDEN / f"real-{case}.txt.source").read_text(encoding="utf-8")
        assert "puppet-agent 7.23.0 and puppetserver 7.9.5 from Debian 12" in source
        assert "\x1b[" in text, f"real-{case}.txt lost its ANSI colours"


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_agent_run(case: str) -> None:
    expected = CASES[case]
    text, code = _golden(case)
    run = parse_agent_run(text, code)
    assert isinstance(run, AgentRun)
    assert run.served_by == expected.served_by
    assert run.succeeded is (expected.served_by is not None)
    assert run.commit == expected.commit
    if expected.served_by is not None:
        assert code == 0 and not run.changed
        assert run.environment == "production"
        assert run.configuration_version == f"{expected.served_by}-production-{expected.commit}"
        assert not run.cached_catalog
    else:
        assert code == 1 and run.configuration_version is None
    assert [(t.server, t.kind) for t in run.troubles] == list(expected.troubles)
    for trouble, bounds in zip(run.troubles, expected.waited, strict=True):
        if bounds is None:
            assert trouble.waited_seconds is None
        else:
            assert trouble.waited_seconds is not None
            assert bounds[0] <= trouble.waited_seconds < bounds[1]
        assert "Trying with next server" not in trouble.message
    others = [e for e in run.errors if e != SANDBOX_ERROR]
    assert len(others) == len(expected.errors), others
    for line, fragment in zip(others, expected.errors, strict=True):
        assert line.startswith(fragment)
