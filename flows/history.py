"""Every drill's figures, kept where the Prefect server keeps its data: the drill publishes the
lab's history as the table artifact `dr-drill-history-<lab>` and its trend (the comparison with
the last drill and the budget, and the chart) as the Markdown artifact `dr-drill-trend-<lab>`;
`pe-dr history` reads the table artifact's versions back.

Why artifacts and not the drills' journals read back from their flow runs (journal.read):

- An artifact lives in the Prefect database itself (SQLite or PostgreSQL), beside the flow runs.
  A journal's figures come from the check tasks' results, which live on result storage: a
  laptop asking the team's server may not read the worker's disk. The table is what the UI
  shows, so the command line and the UI agree.
- One paged query answers for every drill; reading journals costs a dozen calls and the
  result reads of every check, per drill.

Each version of the table is written by one drill's run (Prefect links it to that run) and
holds the whole history, but the history is rebuilt from each version's own row only, the row
of the run that wrote it: a copy of an older row in a newer version is never trusted over its
own run's word; a Retry's version replaces the failed attempt's row (a retried drill counts
once, with its latest outcome and the date it began); two drills closing at once cannot lose
each other's row (the table one of them shows may lack the other's until the next drill).
Drills that ended without reaching their close (the process killed outright) and drills run
before this version have no row.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType
from prefect.client.schemas.sorting import ArtifactSort

from pe_dr import history
from pe_dr.history import Drill
from pe_dr.report import DrillReport

TABLE_PREFIX = "dr-drill-history-"
# emitted when a drill of a lab passes: what the overdue automation expects (deployments.admin)
PASSED_EVENT = "pe-dr.drill.passed"
DRILL_FLOW = "dr-drill"
TREND_PREFIX = "dr-drill-trend-"
PAGE = 200
SHOWN_ROWS = 120  # in the table artifact, newest first: ten years of monthly drills


def table_key(lab: str) -> str:
    return TABLE_PREFIX + lab  # lab names are artifact keys' characters (LabSpec.name)


def trend_key(lab: str) -> str:
    return TREND_PREFIX + lab


def read(lab: str | None = None) -> list[Drill]:
    """Every drill on record (of `lab`, or of every lab), one row per flow run, oldest first."""
    key = (
        ArtifactFilterKey(any_=[table_key(lab)])
        if lab
        else ArtifactFilterKey(like_="dr-drill-history-%")
    )
    seen: dict[Any, Any] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=key, type=ArtifactFilterType(any_=["table"])),
                sort=ArtifactSort.CREATED_DESC,
                limit=PAGE,
                offset=offset,
            )
            seen.update({a.id: a for a in page})
            if len(page) < PAGE:
                break
            offset += PAGE
    versions = sorted(seen.values(), key=lambda a: (a.created, str(a.id)))
    return history.latest_per_run(d for a in versions if (d := _own_row(a)) is not None)


def _own_row(artifact: Any) -> Drill | None:
    """The row of the run that wrote this version of the table."""
    if artifact.flow_run_id is None or not artifact.key:
        return None
    try:
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    except ValueError:
        return None
    for row in rows if isinstance(rows, list) else []:
        drill = Drill.from_row(row)
        if (
            drill is not None
            and drill.flow_run_id == str(artifact.flow_run_id)
            and table_key(drill.lab) == artifact.key
        ):
            return drill
    return None


def publish(record: DrillReport, *, lab: str, flow_run: str) -> list[Drill]:
    """The lab's history with this drill in it, published as the table and trend artifacts of
    the running flow run; returns the history."""
    drills = history.latest_per_run(
        [*read(lab), history.drill_of(record, lab=lab, flow_run=flow_run)]
    )
    latest = drills[-1]
    counted = history.drills_only(drills) or [latest]
    create_table_artifact(
        key=table_key(lab),
        table=[d.to_row() for d in reversed(drills[-SHOWN_ROWS:])],
        description=f"Every DR drill of lab {lab}, newest first. {history.summary(counted)}.",
    )
    svg = history.chart_svg(counted, title=f"DR drills of lab {lab}")
    create_markdown_artifact(
        key=trend_key(lab),
        markdown=history.trend_markdown(counted, svg, table_key=table_key(lab)),
        description=(f"lab {lab}: {latest.verdict}; " + "; ".join(history.comparison(counted)[:1])),
    )
    return counted


def publish_quietly(record: DrillReport, *, lab: str, flow_run: str) -> Sequence[str]:
    """publish, for a drill's close: the history is a view of the record, and a failure to
    publish it never fails the drill; it is said in the run's log. Returns the comparison."""
    try:
        return history.comparison(publish(record, lab=lab, flow_run=flow_run))
    except Exception as exc:
        with contextlib.suppress(Exception):
            get_run_logger().warning("the drill history of lab %s was not published: %s", lab, exc)
        return []


def lab_resource(lab: str) -> str:
    return f"pe-dr.lab.{lab}"


def announce_pass(record: DrillReport, *, lab: str) -> bool:
    """Emit PASSED_EVENT for a drill (`dr-drill`, promoting or not) that passed; True when
    emitted. A promotion or reprotect run alone is not a drill. Never fails the drill: a lost
    event is said in the run's log."""
    if record.status != "passed" or record.flow != DRILL_FLOW:
        return False
    try:
        from prefect.events import emit_event

        emit_event(
            event=PASSED_EVENT,
            resource={"prefect.resource.id": lab_resource(lab), "prefect.resource.name": lab},
            payload={"flow_run_id": record.flow_run_id, "kind": history.kind_of(record)},
        )
    except Exception as exc:
        with contextlib.suppress(Exception):
            get_run_logger().warning("the pass of lab %s was not announced: %s", lab, exc)
        return False
    return True


def warm_up() -> None:
    """Import the plotting library in a thread of its own while the drill runs: its seconds of
    import are paid while the drill waits on the lab, not at its close."""

    def load() -> None:
        for module in ("matplotlib.figure", "matplotlib.backends.backend_svg", "matplotlib.dates"):
            with contextlib.suppress(Exception):
                importlib.import_module(module)

    threading.Thread(target=load, name="pe-dr-history-warm-up", daemon=True).start()
