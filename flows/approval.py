"""Approval in the Prefect UI: a run that asks (`approval: ask`) pauses just before it halts or
destroys anything, and the flow run's Resume form asks for a decision, approve or reject, and a
reason, which goes in the journal. Rejected, or unanswered within the approval timeout, the run
raises CalledOff: nothing is halted and the run ends Cancelled with the reason
(flows.common).

Prefect 3.9 fails a run whose pause times out (the server turns every later state of it into
Failed, "The flow was paused and never resumed"), so the timeout is ours: at its end this process
resumes the run itself with a rejection that says so, while Prefect's own pause timeout, a little
longer, is only the backstop. Each pause has a key of its own, so a Retry asks again rather than
replaying the earlier answer (Prefect returns the stored input of a pause key that already fired).

Only a run from a deployment can ask: a run of `pe-dr drill` has no one at a Resume button (its
`--yes` is the approval), and asking there is refused at once, before the lab is touched.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from pydantic import Field

from flows.common import note, say
from pe_dr.errors import CalledOff, ConfigError
from pe_dr.secrets import scrub
from tasks import progress
from tasks.common import root_flow_run_id

# Prefect's own pause timeout is ours plus this: our resume lands first.
BACKSTOP_SECONDS = 30
# who "answered" when no one did within the approval timeout
TIMEOUT_APPROVER = "pe-dr (approval timeout)"


class Decision(RunInput):
    """The Resume form."""

    decision: Literal["approve", "reject"] = Field(
        title="Decision",
        description="approve: go on; reject: stop here, nothing is halted or destroyed.",
    )
    reason: str = Field(
        title="Reason",
        min_length=1,
        max_length=500,
        description="Why: it goes in the drill's journal.",
    )
    # Prefect's open-source server records no user for a Resume: the one who answers says who
    approver: str = Field(
        title="Your name",
        min_length=1,
        max_length=100,
        description="Who decides: it goes in the journal and on the auditors' page.",
    )


def require_possible(mode: str) -> None:
    """Fail early when this run is to ask and cannot (no deployment: no Resume form)."""
    if mode == "ask" and _is_root() and deployment.id is None:
        raise ConfigError(
            "approval 'ask' needs a run from a deployment: the question is asked by its Resume "
            "form in the Prefect UI (on the command line, --yes is the approval)"
        )


def ask(what: str, mode: str, timeout_seconds: int, poll_seconds: float) -> None:
    """When the run asks: pause until someone approves `what` ("halt primary.vm …"). Returns
    when approved; raises CalledOff when rejected or unanswered. A subflow never asks: its root
    run did, for everything it will do."""
    if mode != "ask" or not _is_root():
        return
    require_possible(mode)
    run_id = flow_run.id
    note(f"approval asked in the Prefect UI to {what} (waiting at most {timeout_seconds} s)")
    say(
        f"waiting for approval to {what}: open flow run {run_id} in the Prefect UI, press "
        f"Resume, approve or reject (at most {timeout_seconds} s)"
    )
    form = Decision.with_initial_data(
        description=f"**Approve this run to {what}?**\n\nReject it and nothing is halted or "
        f"destroyed: the run ends Cancelled with your reason. No answer within "
        f"{timeout_seconds} s counts as a rejection."
    )
    progress.waiting(f"approval in the Prefect UI to {what}")
    late = f"no approval within {timeout_seconds} s"
    with _rejected_when_due(str(run_id), timeout_seconds, late) as timed_out:
        try:
            answer = pause_flow_run(
                wait_for_input=form,
                timeout=timeout_seconds + BACKSTOP_SECONDS,
                poll_interval=max(1, min(10, round(poll_seconds))),
                key=f"approval-{uuid.uuid4().hex}",  # a Retry asks again
            )
        except FlowPauseTimeout:  # the backstop: our own resume did not land
            answer = None
    if answer is None or timed_out.is_set():
        note(f"{late}: nothing was halted or destroyed")
        raise CalledOff(f"{late} to {what}: nothing was halted or destroyed")
    reason = scrub(answer.reason.strip())
    who = scrub(" ".join(answer.approver.split()))
    if answer.decision != "approve":
        note(f"rejected in the Prefect UI by {who}: {reason}")
        raise CalledOff(
            f"rejected in the Prefect UI by {who}: {reason}: nothing was halted or destroyed"
        )
    note(f"approved in the Prefect UI by {who} to {what}: {reason}")


def _is_root() -> bool:
    return root_flow_run_id() == str(flow_run.id)


@contextlib.contextmanager
def _rejected_when_due(run_id: str, timeout: float, reason: str) -> Iterator[threading.Event]:
    """At the end of `timeout`, resume the paused run with a rejection (the event is set when
    that rejection was accepted: no one answered in time)."""
    answered, timed_out = threading.Event(), threading.Event()

    def reject() -> None:
        if answered.wait(timeout):
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.responses import SetStateStatus

        with contextlib.suppress(Exception), get_client(sync_client=True) as client:
            result = client.resume_flow_run(
                uuid.UUID(run_id),
                run_input={"decision": "reject", "reason": reason, "approver": TIMEOUT_APPROVER},
            )
            if result.status == SetStateStatus.ACCEPT:
                timed_out.set()

    context = contextvars.copy_context()  # Prefect's settings and client context
    watcher = threading.Thread(
        target=context.run, args=(reject,), name="pe-dr-approval-timeout", daemon=True
    )
    watcher.start()
    try:
        yield timed_out
    finally:
        answered.set()
        watcher.join(timeout=30)


@dataclass(frozen=True)
class Ask:
    """A run's approval settings, for the flow bodies: `approve("halt primary.vm")`."""

    mode: str = "none"
    timeout_seconds: int = 3600
    poll_seconds: float = 2.0

    @classmethod
    def of(cls, parameters: Any) -> Ask:
        """From a parameter model with `approval` and `approval_timeout_seconds`."""
        return cls(
            parameters.approval,
            parameters.approval_timeout_seconds,
            getattr(parameters, "poll_interval_seconds", 2.0),
        )

    def __call__(self, what: str) -> None:
        ask(what, self.mode, self.timeout_seconds, self.poll_seconds)
