"""The failover drill's markers and the replica's checks as tasks.

Writing and removing markers is never cached: a Retry writes markers of its own (an earlier
attempt's were removed by its clean-up, or are replaced here). The check's inputs hold the
attempt's marker, so a Retry checks again what the replica serves (and its result is kept for the
journal).
"""

from __future__ import annotations

import time

from pe_dr.checks import rpo
from pe_dr.errors import PreconditionError
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.steps import markers, stores
from tasks.checks import verdict
from tasks.common import action_task, lab_task

write_markers = action_task(markers.write_markers, timeout=3600, cache=False)


@lab_task(timeout=900, retries=2)
def halt_primary(
    lab: LabSpec, vm: str, confirm: list[str], marks: markers.Markers, interval: float
) -> markers.Outage:
    """Halt the primary while the marker stream writes into it (the start of the RTO clock is the
    outage's `halt_returned_at`, its RPO's `down_at`).

    A VM that is already down is refused on the first attempt: the RTO clock would start in the
    middle of an outage nobody timed (a retry of this task, after a halt that went through but
    reported an error, takes the VM as it is)."""
    from prefect.runtime import task_run

    with Lab(lab) as live:
        name = lab.host(vm).name
        state = live.vagrant.state(name)
        if state != "running":
            if (task_run.run_count or 1) <= 1:
                raise PreconditionError(
                    f"{vm} is {state} before the halt: a failover measured from now would time "
                    "an outage already under way; start it first (a Retry does)"
                )
            now = time.time()  # the earlier attempt's halt went through
            return markers.Outage(now, now, now, interval, {s: () for s in stores.streamed()})
        return markers.halt_while_writing(live, vm, confirm, marks, interval)


remove_markers = action_task(markers.remove_markers, timeout=600, cache=False)
check_replica_serves = action_task(rpo.check_replica_serves, timeout=600, retries=0, then=verdict)
