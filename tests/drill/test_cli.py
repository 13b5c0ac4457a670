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


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_private_lab_drill_with_a_budget_reports_its_wait_leaves_nothing_and_is_not_retried(
    tmp_path: Path,
) -> None:
    """`pe-dr drill --lab sim --budget …`: the budget is the one used, a wait over 10 s says so,
    the journal shows no Python None, nothing of the private lab is left (folder, process), and
    `pe-dr retry` says why that run cannot be retried instead of drilling another lab."""
    import json
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PE_DR_LAB", "LABSIM"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "deployments.cli"]
    reports = tmp_path / "reports"
    drill = subprocess.run(
        [
            *cli,
            "drill",
            "--lab",
            "sim",
            "--fault",
            "replication:broken",
            "--budget",
            "replication_lag_seconds=12",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = drill.stdout
    assert drill.returncode == 1, out + drill.stderr
    assert "was not on replica.vm 12 s after the push" in out, "the budget of this run"
    waits = re.findall(r"waiting for replica\.vm to deploy commit [0-9a-f]{7}… (\d+)/12 s", out)
    assert waits and all(10 <= int(w) <= 12 for w in waits), out
    report = json.loads(next(reports.glob("drill-*.json")).read_text())
    text = json.dumps(report)
    assert "None" not in text and "None" not in out
    state = re.search(r"starting a simulated lab in (\S+)", out)
    assert state is not None, out
    assert not Path(state.group(1)).exists(), "the private lab's folder is removed"
    left = subprocess.run(["pgrep", "-f", state.group(1)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "and its daemon stopped"

    retry = subprocess.run(
        [*cli, "retry", report["flow_run_id"]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert retry.returncode == 2, retry.stdout + retry.stderr
    assert retry.stderr.strip().splitlines() == [
        f"pe-dr: flow run {report['flow_run_id']} drilled a private simulated lab (pe-dr drill "
        "--lab sim), which was removed when that drill ended, so it cannot be retried; run "
        "pe-dr drill --lab sim again"
    ]
