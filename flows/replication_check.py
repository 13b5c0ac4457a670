"""The replication check: commit a probe to the control repo and prove it reaches the replica."""

from __future__ import annotations

from prefect.runtime import flow_run

from flows.common import chapter
from flows.params import ReplicationCheckParameters
from pe_dr.lab.spec import LabSpec
from tasks import checks
from tasks.lab import require_lab_state


def root_run_id() -> str:
    """Stable across Retries of one run, so a completed replication check stays cached."""
    return str(flow_run.root_flow_run_id or flow_run.id)


@chapter()
def replication_check(spec: LabSpec, parameters: ReplicationCheckParameters) -> dict[str, object]:
    """Commit a probe to the control repo and prove it reaches the replica; measure the lag."""
    budgets, poll = parameters.budgets, parameters.poll_interval_seconds
    both = (spec.primary.name, spec.replica.name)
    require_lab_state(spec, "replication_check", running=both, code_manager=True, replica=True)
    result = checks.check_replication(
        spec,
        run_id=root_run_id(),
        budget_seconds=budgets.replication_lag_seconds,
        poll_interval=poll,
    )
    commit = str(result.evidence.get("commit", ""))
    checks.check_agent_on_both(spec, commit=commit)
    return {"commit": commit, "replication_lag_seconds": result.seconds}
