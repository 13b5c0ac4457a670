"""Pre-flight: what would fail late fails in the first seconds, in one sentence, exit 2, with
nothing done to the lab; a journal that cannot be written goes to stdout."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import load_spec
from pe_dr.report import DrillReport

# What changes a lab; pre-flight may read (vagrant status, ssh-config, file reads), never these.
CHANGES = {
    "vagrant.up",
    "vagrant.halt",
    "vagrant.destroy",
    "git.push",
    "code-manager.deploy",
    "puppet-code.deploy",
    "puppet.infrastructure.provision",
    "puppet.infrastructure.enable",
    "puppet.access.login",
    "puppet.job.run",
    "gitlab.rails-runner",
}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pe_dr_cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_command_line_refuses_in_a_second_before_prefect_starts(tmp_path: Path) -> None:
    """A report folder that cannot be made and no vagrant: one line each, exit 2, no Prefect."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PE_DR_LAB"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    (tmp_path / "empty").mkdir()
    env["PATH"] = str(tmp_path / "empty")  # no vagrant there, whatever this machine has
    done = _cli("drill", "--yes", "--report-dir", str(blocker / "reports"), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"pe-dr: the report directory {blocker / 'reports'} cannot be created: {blocker} is "
        "not a folder",
        "pe-dr: vagrant is not installed or not on PATH",
    ]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "prefect").exists(), "Prefect never started"


def _run(tmp_path: Path, flow: str = "dr-drill", **parameters: Any) -> tuple[bool, DrillReport]:
    from flows import journal
    from flows.params import CodeManagerParameters, DrillParameters, TeardownParameters
    from flows.registry import FLOWS

    models: dict[str, Any] = {
        "dr-drill": DrillParameters,
        "code-manager-setup": CodeManagerParameters,
        "teardown": TeardownParameters,
    }
    if flow == "dr-drill":
        parameters.setdefault("report_dir", str(tmp_path))
        parameters.setdefault("poll_interval_seconds", 0.1)
    state = FLOWS[flow](models[flow](**parameters), return_state=True)
    report = journal.record_of(state)
    assert report is not None, "every run writes a journal"
    return state.is_completed(), report


def _preflight_problem(report: DrillReport) -> str:
    # the roles are read first (PE's own state, read-only), then pre-flight refuses
    steps = [(s.name, s.status) for s in report.steps]
    assert steps == [("lab-roles", "completed"), ("pre-flight", "failed")], report.steps
    return report.steps[-1].detail


@pytest.mark.slow
def test_a_run_that_would_halt_or_destroy_unnamed_vms_fails_at_once(
    built: LabHandle, tmp_path: Path
) -> None:
    mark = len(built.journal())
    ok, report = _run(tmp_path, confirm=[])
    assert not ok
    # the sentence the failover would have said after an hour of building a fresh lab
    assert _preflight_problem(report) == (
        "refusing to halt primary.vm: the run must name it in `confirm` (--yes on the command line)"
    )
    ok, report = _run(tmp_path, confirm=[], promote=True)
    assert not ok
    assert _preflight_problem(report).split("; ") == [
        f"refusing to {action} primary.vm: the run must name it in `confirm` (--yes on the "
        "command line)"
        for action in ("halt", "destroy")
    ]
    ok, report = _run(tmp_path, "teardown", confirm=["pimary.vm"])
    assert not ok
    assert _preflight_problem(report).startswith(
        "`confirm` names pimary.vm, which is not a VM of lab"
    )
    assert [e for e in built.journal()[mark:] if e["op"] in CHANGES] == []


@pytest.mark.slow
def test_a_missing_secret_and_an_inactive_lab_lock_fail_at_once(
    built: LabHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.lab_lock import ensure_lab_limit, limit_name

    spec = load_spec(built.spec_path)
    ensure_lab_limit(spec)
    monkeypatch.delenv("PE_CONSOLE_PASSWORD")
    mark = len(built.journal())
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            limit_name(spec), GlobalConcurrencyLimitUpdate(active=False)
        )
        try:
            ok, report = _run(tmp_path, confirm=["primary.vm"])
        finally:
            client.update_global_concurrency_limit(
                limit_name(spec), GlobalConcurrencyLimitUpdate(active=True)
            )
    assert not ok
    problems = _preflight_problem(report).split("; ")
    assert problems == [
        "the secret 'pe-console-password' is not set: create the Prefect Secret block "
        "'pe-console-password' or set the environment variable PE_CONSOLE_PASSWORD",
        f"the concurrency limit {limit_name(spec)} is inactive, so it would not keep two drills "
        "off the lab: activate it in the UI (Concurrency) or delete it",
    ]
    assert [e for e in built.journal()[mark:] if e["op"] in CHANGES] == []


@pytest.fixture
def stored_tokens(built: LabHandle) -> Iterator[Lab]:
    """The lab's stored admin and GitLab tokens, put back as they were afterwards."""
    spec = load_spec(built.spec_path)
    with Lab(spec) as lab:
        primary, gitlab = lab.host(spec.primary.name), lab.host(spec.gitlab.name)
        admin = primary.read(paths.ADMIN_TOKEN, root=True)
        api = gitlab.read(paths.GITLAB_API_TOKEN, root=True)
        try:
            yield lab
        finally:
            primary.put(paths.ADMIN_TOKEN, admin, mode=0o600, owner="root", group="root")
            gitlab.put(paths.GITLAB_API_TOKEN, api, mode=0o600, owner="root", group="root")


def _spoil(lab: Lab) -> None:
    spec = lab.spec
    for vm, path in (
        (spec.primary.name, paths.ADMIN_TOKEN),
        (spec.gitlab.name, paths.GITLAB_API_TOKEN),
    ):
        lab.host(vm).put(path, b"refused-token-000000\n", mode=0o600, owner="root", group="root")


@pytest.mark.slow
def test_a_refused_token_with_a_wrong_password_fails_before_anything_acts(
    built: LabHandle, tmp_path: Path, stored_tokens: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spoil(stored_tokens)
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", "not-the-password")
    mark = len(built.journal())
    ok, report = _run(tmp_path, confirm=["primary.vm"])
    assert not ok
    assert _preflight_problem(report) == (
        "PE on primary.vm refuses the stored admin token and the password of 'admin' (check the "
        "Secret block pe-console-password or PE_CONSOLE_PASSWORD)"
    )
    assert "not-the-password" not in json.dumps(report.to_dict())
    assert [e for e in built.journal()[mark:] if e["op"] in CHANGES] == []


@pytest.mark.slow
def test_refused_tokens_with_the_right_password_are_noted_and_renewed(
    built: LabHandle, tmp_path: Path, stored_tokens: Lab, journal_ops: Any
) -> None:
    _spoil(stored_tokens)
    mark = len(built.journal())
    ok, report = _run(tmp_path, "code-manager-setup")
    assert ok, [(s.name, s.status, s.detail) for s in report.steps if s.status != "completed"]
    assert report.steps[1].name == "pre-flight" and report.steps[1].status == "completed"
    assert "the stored admin token on primary.vm is refused; the drill renews it" in report.notes
    assert "the stored GitLab API token on gitlab.vm is refused; the drill renews it" in (
        report.notes
    )
    assert journal_ops(built, "puppet.access.login", mark), "the admin token was renewed"
    assert journal_ops(built, "gitlab.rails-runner", mark), "and the GitLab token"


@pytest.mark.slow
def test_a_journal_that_cannot_be_written_goes_to_stdout_with_the_reason(
    built: LabHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def full(self: DrillReport, directory: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(DrillReport, "write", full)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    progress = logging.getLogger("pe_dr.progress")
    level = progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        ok, report = _run(tmp_path, confirm=[])  # fails at pre-flight: the quickest journal
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
    assert not ok
    out = capsys.readouterr().out
    start = out.index('{\n  "status"')
    journal = json.loads(out[start : out.index("\n}\n", start) + 2])
    assert journal["flow_run_id"] == report.flow_run_id
    assert [s["name"] for s in journal["steps"][:2]] == ["lab-roles", "pre-flight"]
    reason = f"journal NOT written ({tmp_path}: No space left on device)"
    assert any(reason in line for line in said), said
    assert any("could not be written" in n for n in journal["notes"])


@pytest.mark.slow
def test_a_passed_run_whose_journal_cannot_be_written_fails_saying_so(
    built: LabHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: DrillReport, directory: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(DrillReport, "write", full)
    ok, report = _run(tmp_path, "code-manager-setup")  # a set-up that passes on a built lab
    assert not ok, "a passed drill without its journal is not a pass"
    assert report.status == "passed"  # what the drill proved stays true
    assert report.journal_path is None
    assert any("could not be written" in n for n in report.notes)
