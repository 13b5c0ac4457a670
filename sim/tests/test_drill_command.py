"""`labsim drill`: the product's drill on a private lab that is gone afterwards, whatever happened;
its exit code is pe-dr's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from driver import LABSIM, labsim

from labsim.drill import child_environment
from labsim.testing import alive, process_tree

PE_DR = [sys.executable, "-m", "pe_dr_cli.main"]


@pytest.fixture
def lab_tmp() -> Iterator[Path]:
    """The TMPDIR of `labsim drill`, where its lab's folder goes: short, since the lab's control
    socket lives there (a UNIX socket path has at most 107 bytes; pytest's tmp_path may be
    longer under xdist)."""
    folder = Path(tempfile.mkdtemp(prefix="ld-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(tmp: Path, lab_tmp: Path) -> dict[str, str]:
    """This test's own Prefect database and temporary folder; no lab of the caller's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PE_DR_LAB", "LABSIM", "PE_CONSOLE", "GITLAB_ROOT", "PREFECT_API"))
    }
    env.update(PREFECT_HOME=str(tmp / "prefect"), TMPDIR=str(lab_tmp))
    return env


def _state_of(out: str) -> Path:
    return Path(out.split("starting a simulated lab in ", 1)[1].split()[0])


def _processes_naming(text: str) -> str:
    return subprocess.run(
        ["pgrep", "-f", text], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()


def _assert_no_lab_left(state: Path, lab_tmp: Path) -> None:
    gone_by = time.monotonic() + 15  # killed processes are reaped by init, not at once
    while _processes_naming(str(state)) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert _processes_naming(str(state)) == "", "the private lab was stopped"
    assert not state.exists(), "and its folder removed"
    assert list(lab_tmp.iterdir()) == [], "nor anything else in its temporary folder"


def _labsim_drill(
    tmp: Path, lab_tmp: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABSIM, "drill", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp, lab_tmp),
        check=False,
    )


# -- no lab needed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--fault", "replication:sideways"], "replication:sideways"),
        (["--fault", "halt:ignored=ghost.vm"], "ghost.vm"),
        (["--agents", "0"], "--agents must be between 1 and 150"),
        (["--", "--spec", "/srv/lab.toml"], "leave --spec out"),
    ],
)
def test_what_labsim_refuses_is_exit_2_before_a_lab_starts(
    tmp_path: Path, lab_tmp: Path, args: list[str], words: str
) -> None:
    done = _labsim_drill(tmp_path, lab_tmp, *args, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == "", "nothing started"
    assert list(lab_tmp.iterdir()) == [], "no lab folder was made"


def test_options_after_the_separator_are_for_the_drill_only(tmp_path: Path) -> None:
    done = labsim("status", "--state", str(tmp_path), "--", "--yes", timeout=60)
    assert done.returncode == 2
    assert "for `labsim drill` only" in done.stderr


def test_the_drill_gets_the_labs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setenv("PE_DR_LAB_SPEC", "/elsewhere/lab.toml")
    env = child_environment(
        [("PATH", "/tmp/lab/bin:$PATH"), ("PE_DR_LAB_SPEC", "/tmp/lab/lab.toml")]
    )
    assert env["PATH"] == "/tmp/lab/bin:/usr/bin"
    assert env["PE_DR_LAB_SPEC"] == "/tmp/lab/lab.toml"


# -- whole drills -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_home")  # tmp_path/prefect, migrated
def test_a_passing_drill_exits_0_and_leaves_no_lab(tmp_path: Path, lab_tmp: Path) -> None:
    done = _labsim_drill(tmp_path, lab_tmp, "--", "--report-dir", str(tmp_path / "reports"))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "PASSED" in done.stdout
    assert "Traceback" not in out
    (journal,) = [json.loads(p.read_text()) for p in (tmp_path / "reports").glob("drill-*.json")]
    assert journal["status"] == "passed"
    # the short poll interval labsim gives pe-dr reached the run
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        (stored,) = db.execute(
            "select parameters from flow_run where id = ?", (journal["flow_run_id"],)
        ).fetchone()
    assert json.loads(stored)["parameters"]["poll_interval_seconds"] == 0.2
    _assert_no_lab_left(_state_of(done.stdout), lab_tmp)
    assert "cannot be retried" not in out, "a passed run needs no retry"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_home")  # tmp_path/prefect, migrated
def test_a_broken_failover_exits_1_naming_the_check_and_cannot_be_retried(
    tmp_path: Path, lab_tmp: Path
) -> None:
    """`labsim drill --fault failover:broken -- --budget ...`: pe-dr's exit 1 naming the check,
    its options reach the run, nothing shows a None, no lab left, and `pe-dr retry` of the run
    says why it cannot be retried."""
    reports = tmp_path / "reports"
    done = _labsim_drill(
        tmp_path,
        lab_tmp,
        "--fault",
        "failover:broken",
        "--",
        "--budget",
        "replication_lag_seconds=45",
        "--report-dir",
        str(reports),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout
    assert "replica.vm is missing, so agents cannot fail over" in done.stdout
    # the failed step, what the check saw and the next thing to do, on the command line too
    assert "     step  check-failover-ready (failover-drill, 1 attempts)" in done.stdout
    assert "      saw  " in done.stdout
    # one piece of advice, and a true one: the lab goes with the command (24.4: there were
    # three, two of them offering a Retry that `pe-dr retry` then refuses)
    advice = "run labsim drill again"
    assert (
        "     next  clear the cause above; this lab is removed with the command, so the run "
        f"cannot be retried: {advice}"
    ) in done.stdout
    assert done.stdout.count(advice) == 1, done.stdout
    assert "pe-dr retry" not in done.stdout and "Retry" not in done.stdout, done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads(next(reports.glob("drill-*.json")).read_text())
    assert report["status"] == "failed"
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["failover_ready"]
    assert "None" not in done.stdout and "None" not in json.dumps(report)
    state = _state_of(done.stdout)
    _assert_no_lab_left(state, lab_tmp)
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        (stored,) = db.execute(
            "select parameters from flow_run where id = ?", (report["flow_run_id"],)
        ).fetchone()
    assert json.loads(stored)["parameters"]["budgets"]["replication_lag_seconds"] == 45
    retry = subprocess.run(
        [*PE_DR, "retry", report["flow_run_id"]],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path, lab_tmp),
        check=False,
    )
    assert retry.returncode == 2, retry.stdout + retry.stderr
    assert retry.stderr.strip().splitlines() == [
        f"pe-dr: the lab of run {report['flow_run_id']} ({state}) is gone: it cannot be retried"
    ]


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.usefixtures("prefect_home")  # tmp_path/prefect, migrated
def test_ctrl_c_stops_the_drill_once_and_removes_the_lab(tmp_path: Path, lab_tmp: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to labsim's process group) mid-drill: pe-dr gets it (labsim
    forwards it), stops with 130, and the lab, its folder and every process are gone."""
    drill = subprocess.Popen(
        [*LABSIM, "drill", "--", "--report-dir", str(tmp_path / "reports")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path, lab_tmp),
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(drill.stdout or []), daemon=True)
    reader.start()
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not any("completed  vm-up primary.vm" in line for line in lines):
            assert drill.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the drill never brought the primary up"
            time.sleep(0.1)
        tree = process_tree(drill.pid)
        assert len(tree) > 2, "pe-dr and the lab daemon run below labsim"
        os.killpg(drill.pid, signal.SIGINT)
        code = drill.wait(timeout=120)
    finally:
        if drill.poll() is None:
            for pid in alive(process_tree(drill.pid)):
                os.kill(pid, signal.SIGKILL)
            drill.wait(timeout=30)
        reader.join(timeout=30)
    out = "".join(lines)
    assert code == 130, out
    assert "STOPPED by SIGINT (Ctrl-C)" in out, out
    assert "Traceback" not in out, out
    assert "     next  this lab is removed with the command, so the run cannot be retried" in out
    assert out.count("run labsim drill again") == 1 and "pe-dr retry" not in out, out
    (journal,) = [json.loads(p.read_text()) for p in (tmp_path / "reports").glob("drill-*.json")]
    assert journal["status"] == "interrupted"
    _assert_no_lab_left(_state_of(out), lab_tmp)
    gone_by = time.monotonic() + 30
    while alive(tree) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not alive(tree), f"processes left behind: {alive(tree)}"
