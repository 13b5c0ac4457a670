"""The promotion's check: the replica serves as the new primary, with the old one's keys."""

from __future__ import annotations

import time

from pe_dr.checks.agents import wait_for_server
from pe_dr.checks.result import CheckResult
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.steps.promotion import is_primary
from pe_dr.steps.replica import remote_sha256


def check_promotion(
    lab: Lab,
    *,
    key_digests: dict[str, str],
    budget_seconds: float,
    poll_interval: float,
    began: float | None = None,
) -> CheckResult:
    """The replica serves as primary: PE runs it as the primary, its ports answer, keys kept,
    agents on it. Measures the promotion: from `began` (an epoch time: the destroy of the old
    primary) to every agent served by the new one."""
    replica = lab.spec.replica.name
    problems = []
    if not is_primary(lab, replica):
        problems.append(f"PE does not run {replica} as its primary (no file sync storage)")
    ports = {port: lab.accepts_tcp(replica, port) for port in (8140, 8143, 8170, 4433, 443)}
    closed = [str(p) for p, ok in ports.items() if not ok]
    if closed:
        problems.append(f"{replica} does not answer on {', '.join(closed)}")
    changed = []
    for path, _owner in paths.SECRET_KEY_FILES:
        digest = remote_sha256(lab, replica, path)
        if digest is None or not digest.startswith(key_digests.get(path, "-")):
            changed.append(path.rsplit("/", 3)[-3])
    if changed:
        problems.append(
            "secret keys differ from the old primary's (" + ", ".join(changed) + "): "
            "promotion generated new ones, stored credentials are lost"
        )
    converge = wait_for_server(
        lab,
        name="promotion",
        want=replica,
        since=time.monotonic(),
        budget_seconds=budget_seconds,
        poll_interval=poll_interval,
        noop=False,
    )
    if not converge.passed:
        problems.append(converge.detail)
    evidence: dict[str, object] = {"ports": dict(ports), "agents": dict(converge.evidence)}
    took = None if began is None or not converge.passed else round(time.time() - began, 3)
    if problems:
        return CheckResult("promotion", False, "; ".join(problems), evidence, took)
    return CheckResult(
        "promotion",
        True,
        f"{replica} serves as primary, keys kept; {converge.detail}",
        evidence,
        took,
    )
