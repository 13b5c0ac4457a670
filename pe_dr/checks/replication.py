"""The replication check: a probe commit pushed to the control repo reaches the replica's live
code (Code Manager on the primary, then file sync); measures the lag."""

from __future__ import annotations

import time

from pe_dr.checks.result import CheckResult
from pe_dr.lab.live import Lab
from pe_dr.polling import Pacer
from pe_dr.steps.code_manager import live_commit, live_file, push_control_repo
from pe_dr.steps.replication import PROBE_FILE, commit_probe


def check_replication(
    lab: Lab, *, run_id: str, budget_seconds: float, poll_interval: float
) -> CheckResult:
    """A probe commit pushed to the control repo reaches the replica's live code; measures the
    lag. `run_id` names the run (stable across its Retries; each attempt commits anew)."""
    probe = commit_probe(lab, run_id)
    sha = probe.sha
    replica = lab.spec.replica.name
    pushed = time.monotonic()
    push_control_repo(lab)
    deadline = pushed + budget_seconds
    seen: dict[str, object] = {
        "commit": sha,
        "probe": probe.text,
        "attempt": probe.attempt,
        "earlier_attempts": [{"attempt": n, "commit": c} for n, c in probe.earlier],
    }
    which = f"commit {sha[:11]}"
    if probe.earlier:
        which += " (attempt {}; earlier: {})".format(
            probe.attempt, ", ".join(f"{c[:11]} (attempt {n})" for n, c in probe.earlier)
        )
    pace = Pacer(
        poll_interval, deadline, what=f"{replica} to deploy commit {sha[:7]}…", since=pushed
    )
    signature: str | None = None
    while True:
        signature, _ = live_commit(lab, replica)
        seen["replica_signature"] = signature
        if signature == sha and probe.text in live_file(lab, replica, PROBE_FILE):
            lag = time.monotonic() - pushed
            seen["primary_signature"] = live_commit(lab, lab.spec.primary.name)[0]
            over = f", over its {budget_seconds:g} s budget" if lag > budget_seconds else ""
            return CheckResult(
                "replication",
                not over,
                f"{which} reached {replica} {lag:.1f} s after the push{over}",
                seen,
                seconds=round(lag, 3),
            )
        if not pace.wait():
            break
    seen["primary_signature"] = live_commit(lab, lab.spec.primary.name)[0]
    where = (
        "the primary has it, so file sync to the replica is failing"
        if seen["primary_signature"] == sha
        else "the primary does not have it either, so the webhook or Code Manager is failing"
    )
    has = f"commit {signature[:11]}" if signature else "no deployed code"
    return CheckResult(
        "replication",
        False,
        f"{which} was not on {replica} {budget_seconds:.0f} s after the push "
        f"(replica has {has}); {where}",
        seen,
    )
