"""The failover drill's markers and the replica's checks as tasks.

Writing and removing markers is never cached: a Retry writes markers of its own (an earlier
attempt's were removed by its clean-up, or are replaced here). The check's inputs hold the
attempt's marker, so a Retry checks again what the replica serves (and its result is kept for the
journal).
"""

from __future__ import annotations

from pe_dr.oracles import rpo
from pe_dr.steps import markers
from pe_dr.tasks.checks import verdict
from pe_dr.tasks.common import action_task

write_markers = action_task(markers.write_markers, timeout=3600, cache=False)
remove_markers = action_task(markers.remove_markers, timeout=600, cache=False)
check_replica_serves = action_task(rpo.check_replica_serves, timeout=600, retries=0, then=verdict)
