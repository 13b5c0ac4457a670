"""pe-dr's command line: usage errors exit 2 with one line and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_dr_cli.main import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drill", "--promote"], "--promote destroys the primary"),
        (["drill"], "add --yes"),
        (["drill", "--spec", "/nonexistent.toml", "--yes"], "does not exist"),
        (["drill", "--budget", "rto=5"], "NAME one of failback_seconds"),
        (["drill", "--budget", "rto_seconds=soon"], "'soon' is not a number"),
        (["drill", "--budget", "rto_seconds=0"], "more than 0 and at most 7 days"),
        (["drill", "--poll-interval", "0"], "at least 0.1 and at most 60"),
        (["drill", "--poll-interval", "61"], "at least 0.1 and at most 60"),
        (["history", "--limit", "0"], "--limit 0: must be 1 or more"),
        (["history", "--lab", "Lab_A"], "--lab 'Lab_A' is not a lab name"),
        (["history", "--chart", "/nonexistent/trend.svg"], "/nonexistent is not a folder"),
        # a folder failed only after the table was printed; a .png got SVG bytes (issue 24.4)
        (["history", "--chart", "/tmp"], "--chart /tmp: is a folder"),
        (["history", "--chart", "trend.png"], "the chart is SVG; name a .svg file"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_spec_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "lab.toml"
    spec.write_text('[[hosts]]\nname = "p.vm"\nrole = "primary"\naddress = "nope"\n')
    assert main(["drill", "--spec", str(spec), "--yes"]) == EXIT_USAGE
    assert "hosts.0.address" in capsys.readouterr().err


def test_unknown_command_is_usage() -> None:
    assert main(["bogus"]) == EXIT_USAGE


def test_the_drill_drills_the_lab_the_spec_names_and_nothing_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A private simulated lab is labsim's business (`labsim drill`), not an option of pe-dr's."""
    assert main(["drill", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "--spec FILE" in usage and "--yes" in usage
    assert "--lab" not in usage and "--fault" not in usage
    assert main(["drill", "--lab", "sim", "--yes"]) == EXIT_USAGE


def test_history_limit_shortens_the_table_not_the_comparison(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--limit 1` said "the first drill on record" of a lab with earlier drills (issue 24.4)."""
    from flows import history as drill_history
    from pe_dr_cli import stopping
    from tests.unit.test_history import _drill

    drills = [_drill("a1", "2026-11-01"), _drill("b2", "2026-12-01")]
    monkeypatch.setattr(drill_history, "read", lambda lab=None: list(drills))
    monkeypatch.setattr(stopping, "start_local_server", lambda: None)
    assert main(["history", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 drill of lab" in out
    assert "first drill on record" not in out
    assert "the same as the last drill (2026-11-01)" in out
