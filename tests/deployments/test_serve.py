"""The workstation path: `pe-dr serve` serves every deployment from one process, runs the monthly
drill, and stops cleanly on SIGTERM without pausing the schedule."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labsim.testing import LabHandle

from .conftest import (
    BIN,
    REPO,
    Api,
    PrefectServer,
    drill_parameters,
    group_alive,
    next_first_of_month_0300_utc,
    stop_group,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MANUAL = (
    "lab-setup",
    "code-manager-setup",
    "replica-activation",
    "replication-check",
    "failover-drill",
    "promotion",
    "teardown",
    "dr-drill",
)


@pytest.fixture
def serving(
    server: PrefectServer, lab: LabHandle, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "serve.log").open("w") as out:
        proc = subprocess.Popen(
            [BIN / "pe-dr", "serve"],
            cwd=REPO,
            env=server.env(**lab.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def test_pe_dr_serve_runs_the_monthly_drill_and_stops_cleanly(
    api: Api, serving: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    names = [f"{flow}/manual" for flow in MANUAL] + ["dr-drill/monthly"]
    found = wait_for(
        "pe-dr serve to register every deployment",
        lambda: [api.deployment(name) for name in names],
        timeout=60,
    )
    for manual in found[:-1]:
        assert manual["tags"][:2] == ["pe-dr", "manual"]
        assert not manual["schedules"]
    deployment = found[-1]
    upcoming = wait_for(
        "the scheduler to create the monthly runs",
        lambda: api.scheduled_runs(deployment["id"]),
        timeout=60,
    )
    first = datetime.fromisoformat(upcoming[0]["expected_start_time"].replace("Z", "+00:00"))
    assert first == next_first_of_month_0300_utc(datetime.now(UTC))

    run_id = api.run("dr-drill/monthly", drill_parameters(tmp_path))
    run = api.wait_final(run_id, timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]

    os.killpg(serving.pid, signal.SIGTERM)
    assert serving.wait(60) == 0
    assert not group_alive(serving.pid), "pe-dr serve left processes behind"
    after = api.deployment("dr-drill/monthly")
    assert not after["paused"], "stopping pe-dr serve must not pause the monthly schedule"
    assert after["schedules"][0]["active"]
