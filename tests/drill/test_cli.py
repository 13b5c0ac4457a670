"""pe-dr's command line: usage errors exit 2 with one line and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.cli import EXIT_USAGE, main, parse_exports


def test_parse_exports_reads_labsim_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    text = (
        "export PATH=/tmp/lab/bin:$PATH\n"
        "export PE_DR_LAB_SPEC=/tmp/lab/lab.toml\n"
        "export PE_CONSOLE_PASSWORD='a b$c'\n"
    )
    assert parse_exports(text) == {
        "PATH": "/tmp/lab/bin:/usr/bin",
        "PE_DR_LAB_SPEC": "/tmp/lab/lab.toml",
        "PE_CONSOLE_PASSWORD": "a b$c",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drill", "--fault", "replication:broken"], "--fault works with --lab sim"),
        (["drill", "--lab", "sim", "--promote"], "--promote destroys the primary"),
        (["drill"], "add --yes"),
        (["drill", "--lab", "vagrant", "--spec", "/nonexistent.toml", "--yes"], "does not exist"),
        (["drill", "--lab", "sim", "--budget", "rto=5"], "NAME one of failback_seconds"),
        (["drill", "--lab", "sim", "--budget", "rto_seconds=soon"], "'soon' is not a number"),
        (["drill", "--lab", "sim", "--budget", "rto_seconds=0"], "must be more than 0 seconds"),
        (["drill", "--lab", "sim", "--poll-interval", "0"], "more than 0 and at most 60"),
        (["drill", "--lab", "sim", "--poll-interval", "61"], "more than 0 and at most 60"),
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
