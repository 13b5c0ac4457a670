"""The canary drill's judgements: what the block did to everyone who is not a canary.

While the primary is cut from the canaries, the rest of the fleet must go on as before: every
node's runs compiled by the primary and not failing. PuppetDB on the primary (up throughout)
records each run's `status` and `producer`, the server that compiled it (puppetdb
documentation/api/query/v4/reports.markdown), so a run of the fleet that failed, or that the
replica served, since the fault began means the block reached beyond the canaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def fleet_harm(reports: Iterable[Mapping[str, Any]], *, replica: str) -> list[str]:
    """One sentence per node whose first harmed run (oldest first) failed or was served by the
    replica; empty when the fleet was untouched. `reports` are non-canary runs since the fault."""
    harmed: dict[str, str] = {}
    for report in sorted(reports, key=lambda r: str(r.get("producer_timestamp", ""))):
        node, when = str(report.get("certname")), str(report.get("producer_timestamp"))
        if node in harmed:
            continue
        if report.get("status") == "failed":
            harmed[node] = f"{node}'s run at {when} failed"
        elif report.get("producer") == replica:
            harmed[node] = f"{node}'s run at {when} was compiled by the replica {replica}"
    return list(harmed.values())
