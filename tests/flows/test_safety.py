"""Safety: no secret leaks anywhere a drill writes; destructive steps need naming; bad input is
one line with the right exit code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labsim.testing import LabHandle
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import load_spec
from pe_dr.report import DrillReport

pytestmark = pytest.mark.slow

Drill = Callable[..., tuple[bool, DrillReport]]
Ops = Callable[..., list[dict[str, Any]]]


def _everything_prefect_kept() -> list[str]:
    """Every log line, artifact, flow parameter and state message the Prefect server holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import LogSort

    texts: list[str] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            logs = client.read_logs(limit=200, offset=offset, sort=LogSort.TIMESTAMP_ASC)
            texts += [log.message for log in logs]
            if len(logs) < 200:
                break
            offset += 200
        texts += [str(a.data) + str(a.description) for a in client.read_artifacts(limit=200)]
        for run in client.read_flow_runs(limit=200):
            texts.append(str(run.parameters))
            texts.append(str(run.state.message if run.state else ""))
        for task_run in client.read_task_runs(limit=200):
            texts.append(str(task_run.state.message if task_run.state else ""))
    return texts


def test_no_secret_reaches_logs_artifacts_journals_results_or_command_lines(
    built: LabHandle, tmp_path: Path, run_drill: Drill
) -> None:
    from pe_dr_cli.main import main

    # A failed drill, then its resumed Retry, on top of the full drills of this session.
    built.fault_add("fail:git.push")
    ok, failed = run_drill(tmp_path)
    assert not ok
    built.fault_clear()
    assert main(["retry", failed.flow_run_id]) == 0

    secrets = [s for s in built.secrets() if len(s) >= 8]
    assert len(secrets) >= 6, "the lab issued passwords, tokens and keys"
    haystack = _everything_prefect_kept()
    haystack += [p.read_text() for p in tmp_path.glob("drill-*.json")]
    haystack += [str(e) for e in built.journal()]  # every command line the hosts received
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    haystack += [p.read_bytes().decode("latin-1") for p in storage.rglob("*") if p.is_file()]
    assert len(haystack) > 100
    for secret in secrets:
        leaks = [h for h in haystack if secret in h]
        assert leaks == [], f"a secret ({secret[:3]}…) leaked into: {leaks[0][:200]}"


def test_token_files_on_hosts_are_private(built: LabHandle) -> None:
    with Lab(load_spec(built.spec_path)) as lab:
        primary = lab.host("primary.vm")
        for path in (paths.ADMIN_TOKEN, paths.DEPLOY_TOKEN):
            out = primary.run(["stat", "-c", "%a %U", path], root=True).stdout.split()
            assert out == ["600", "root"], (path, out)
        gitlab = lab.host("gitlab.vm")
        assert (
            gitlab.run(["stat", "-c", "%a", paths.GITLAB_API_TOKEN], root=True).stdout.strip()
            == "600"
        )
        assert not gitlab.exists(paths.GITLAB_TOKEN_SCRIPT, root=True), "the bootstrap is removed"


def test_the_failover_drill_refuses_to_halt_an_unnamed_primary(
    built: LabHandle, tmp_path: Path, run_drill: Drill, journal_ops: Ops
) -> None:
    mark = len(built.journal())
    ok, report = run_drill(tmp_path, flow="failover_drill", confirm=[])
    assert not ok
    assert "refusing to halt primary.vm" in str(report.error)
    assert journal_ops(built, "vagrant.halt", mark) == []


def test_a_wrong_console_password_is_one_sentence_exit_2_without_retries(
    built: LabHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    journal_ops: Ops,
) -> None:
    from pe_dr_cli.main import main

    with Lab(load_spec(built.spec_path)) as lab:  # force a new login
        kept = lab.host("primary.vm").read(paths.ADMIN_TOKEN, root=True)
        lab.host("primary.vm").run(["rm", "-f", paths.ADMIN_TOKEN], root=True)
    try:
        monkeypatch.setenv("PE_CONSOLE_PASSWORD", "Wrong-Passw0rd!")
        mark = len(built.journal())
        argv = ["drill", "--yes", "--spec", str(built.spec_path), "--report-dir", str(tmp_path)]
        code = main(argv)
        out = capsys.readouterr()
        assert code == 2, out.out + out.err
        assert "rejected the password of 'admin'" in out.out
        assert "Wrong-Passw0rd!" not in out.out + out.err
        assert "Traceback" not in out.out + out.err
        assert len(journal_ops(built, "puppet.access.login", mark)) == 1, "a 401 is not retried"
    finally:  # the lab as the other tests find it (a login from scratch: the fresh-lab drill)
        with Lab(load_spec(built.spec_path)) as lab:
            lab.host("primary.vm").put(paths.ADMIN_TOKEN, kept, mode=0o600, owner="root")


def test_missing_vagrant_is_a_configuration_error(
    built: LabHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pe_dr_cli.main import main

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code = main(["drill", "--yes", "--spec", str(built.spec_path), "--report-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    # pre-flight, before Prefect starts: one line on stderr
    assert out.err.splitlines() == ["pe-dr: vagrant is not installed or not on PATH"]
    assert "Traceback" not in out.out + out.err


def test_a_fault_spec_that_does_not_parse_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from labsim.cli import main

    assert main(["drill", "--fault", "replication:sideways"]) == 2
    err = capsys.readouterr().err
    assert "replication:sideways" in err and len(err.strip().splitlines()) == 1


def test_a_vm_the_vagrantfile_does_not_have_is_a_configuration_error(
    built: LabHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pe_dr.lab.spec import HostSpec, Role, dump_spec
    from pe_dr_cli.main import main

    spec = load_spec(built.spec_path)
    ghost = HostSpec(name="ghost.vm", role=Role.AGENT, address="127.0.0.9")
    path = tmp_path / "lab.toml"
    path.write_text(dump_spec(spec.model_copy(update={"hosts": [*spec.hosts, ghost]})))
    code = main(["drill", "--yes", "--spec", str(path), "--report-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "ghost.vm is not a machine of the Vagrantfile" in out.out
    assert "Traceback" not in out.out + out.err


def test_teardown_refuses_without_named_vms(built: LabHandle, journal_ops: Ops) -> None:
    from flows.params import TeardownParameters
    from flows.teardown import teardown

    mark = len(built.journal())
    state = teardown(TeardownParameters(confirm=[]), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="teardown destroys VMs: name them in `confirm`"):
        state.result()
    assert journal_ops(built, "vagrant.destroy", mark) == []


def test_a_run_outside_a_deployment_that_asks_for_approval_is_refused_before_the_lab_is_touched(
    built: LabHandle, tmp_path: Path, run_drill: Any, journal_ops: Any
) -> None:
    """No Resume form without a deployment (`pe-dr drill`'s --yes is its approval): it says so at
    once, after pre-flight, before any set-up or halt."""
    mark = len(built.journal())
    ok, report = run_drill(tmp_path, approval="ask")
    assert not ok and report.status == "failed"
    assert "approval 'ask' needs a run from a deployment" in str(report.error)
    assert [s.name for s in report.steps] == ["lab-roles", "pre-flight"]  # both only read
    acted = {e["op"] for e in built.journal()[mark:]} & {"vagrant.up", "vagrant.halt", "git.push"}
    assert not acted, acted
