"""Fast feedback on long waits: a wait longer than 10 s says what it waits for, on the command
line's progress output and in the flow run's log in the Prefect UI."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from labsim.testing import LabHandle

pytestmark = pytest.mark.slow


def test_a_long_replication_wait_says_so_on_the_command_line_and_in_the_run_log(
    built: LabHandle, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows import journal
    from flows.params import Budgets, ReplicationCheckParameters
    from flows.registry import FLOWS

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    progress = logging.getLogger("pe_dr.progress")  # what `pe-dr drill` prints on stdout
    level = progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    built.fault_add("replication:broken")  # the wait lasts its whole budget, however fast or slow
    try:
        parameters = ReplicationCheckParameters(
            budgets=Budgets(replication_lag_seconds=12), poll_interval_seconds=0.5
        )
        state = FLOWS["replication-check"](parameters, return_state=True)
    finally:
        built.fault_clear()
        progress.removeHandler(handler)
        progress.setLevel(level)
    assert state.is_failed()
    report = journal.record_of(state)
    assert report is not None
    line = re.compile(r"waiting for replica\.vm to deploy commit [0-9a-f]{7}… (\d+)/12 s")
    shown = [m for m in (line.search(s) for s in said) if m]
    assert len(shown) == 1, said  # after 10 s, and not again before 30 s: the wait ended at 12
    assert 10 <= int(shown[0].group(1)) <= 12
    messages: list[str] = []
    deadline = time.monotonic() + 60  # logs reach the server in batches
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[report.flow_run_id]))
            )
        messages = [log.message for log in logs]
        if any(line.search(m) for m in messages):
            break
        time.sleep(0.5)
    assert any(line.search(m) for m in messages), messages
