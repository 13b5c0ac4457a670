"""`pe-dr setup`: the server-side objects the deployments rely on, created idempotently.

- the global concurrency limit `pe-dr-lab-<lab name>` (1 slot): one drill per lab;
- with a notification block name, the automations that notify it: when a `dr-drill` run ends
  Failed or Crashed; when a pe-dr run waits for approval (Paused); when no drill of the lab has
  passed for PE_DR_OVERDUE_DAYS (a proactive trigger: Prefect expects the drill's
  `pe-dr.drill.passed` event within that window and fires when it does not come).

The user creates the notification block (it holds the webhook URL, a secret); this only names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from flows.history import PASSED_EVENT, lab_resource
from flows.lab_lock import ensure_lab_limit, limit_name
from pe_dr.errors import ConfigError
from pe_dr.lab.spec import LabSpec

AUTOMATION_NAME = "pe-dr: notify when a DR drill fails"
DRILL_FLOW = "dr-drill"
SUBJECT = "pe-dr: DR drill {{ flow_run.name }} {{ flow_run.state.name }}"
BODY = """\
DR drill flow run {{ flow_run.name }} ({{ flow.name }}) entered {{ flow_run.state.name }}.
Message: {{ flow_run.state.message }}
Flow run: {{ flow_run|ui_url }}
Press Retry on the run to resume it from the failed step."""

APPROVAL_NAME = "pe-dr: notify when a run waits for approval"
APPROVAL_SUBJECT = "pe-dr: {{ flow.name }} run {{ flow_run.name }} waits for your approval"
APPROVAL_BODY = """\
Flow run {{ flow_run.name }} ({{ flow.name }}) is paused before it halts or destroys anything.
Open it (flow run id {{ flow_run.id }}: {{ flow_run|ui_url }}), press Resume, then approve or
reject with a reason.
No answer within its approval timeout counts as a rejection (nothing is halted)."""


def overdue_name(lab: str) -> str:
    return f"pe-dr: notify when lab {lab} has no passed drill"


def _days(days: float) -> str:
    return f"{days:g} days" if days >= 1 else f"{days * 86400:g} s"


def overdue_text(lab: str, days: float) -> tuple[str, str]:
    """The overdue notice's subject and body (lab names are letters, digits and dashes)."""
    subject = f"pe-dr: no DR drill of lab {lab} has passed for {_days(days)}"
    body = (
        f"No DR drill of lab {lab} has passed for {_days(days)} (PE_DR_OVERDUE_DAYS). Check that "
        "the monthly schedule is active and not paused, that the worker or `pe-dr serve` runs, "
        f"and the latest drill's result: pe-dr history --lab {lab}"
    )
    return subject, body


@dataclass
class SetupOutcome:
    limit: str
    limit_created: bool
    automation: str | None = None
    automation_created: bool = False
    # the other automations --notify made: name -> created now (False: updated)
    more: dict[str, bool] = field(default_factory=dict)


def find_notification_block(name: str) -> UUID:
    """The id of the notification block `name` or `block-type/name` (e.g. slack-webhook/ops)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        if "/" in name:
            slug, block_name = name.split("/", 1)
            try:
                doc = client.read_block_document_by_name(
                    block_name, block_type_slug=slug, include_secrets=False
                )
            except ObjectNotFound:
                raise ConfigError(f"no notification block {name!r} on the Prefect server") from None
            return doc.id
        docs = [
            d
            for d in client.read_block_documents(include_secrets=False)
            if d.name == name
            and d.block_schema is not None
            and "notify" in (d.block_schema.capabilities or [])
        ]
    if not docs:
        raise ConfigError(
            f"no notification block named {name!r} on the Prefect server: create one first "
            "(see the README, Notifications)"
        )
    if len(docs) > 1:
        kinds = ", ".join(sorted(f"{d.block_type.slug}/{name}" for d in docs if d.block_type))
        raise ConfigError(f"several notification blocks are named {name!r}: say which ({kinds})")
    return docs[0].id


def _ensure(name: str, automation: Any) -> tuple[UUID, bool]:
    """Create or update automation `name`; True when it was created now."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return existing[0].id, False
        return client.create_automation(automation), True


def _on_flow_run_states(
    name: str,
    block_name: str,
    what: str,
    states: set[str],
    flows: str | list[str],
    text: tuple[str, str],
) -> tuple[UUID, bool]:
    """An automation that sends `text` (subject, body) to the block when a run of `flows`
    enters one of `states` (Prefect's `prefect.flow-run.<State>` events)."""
    from prefect.automations import AutomationCore
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    block_id = find_notification_block(block_name)
    subject, body = text
    automation = AutomationCore(
        name=name,
        description=(
            f"Sends to notification block {block_name!r} when {what}. Managed by "
            "`pe-dr setup --notify`."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in states},
            match_related=ResourceSpecification(
                {"prefect.resource.id": "prefect.flow.*", "prefect.resource.name": flows}
            ),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
    )
    return _ensure(name, automation)


def ensure_failure_automation(block_name: str) -> tuple[UUID, bool]:
    """Create or update the automation; True when it was created now."""
    return _on_flow_run_states(
        AUTOMATION_NAME,
        block_name,
        f"a {DRILL_FLOW} flow run ends Failed or Crashed",
        {"Failed", "Crashed"},
        DRILL_FLOW,
        (SUBJECT, BODY),
    )


def ensure_approval_automation(block_name: str) -> tuple[UUID, bool]:
    """Notify when a run of any pe-dr flow pauses (it asks for approval only then)."""
    from flows.registry import FLOWS

    return _on_flow_run_states(
        APPROVAL_NAME,
        block_name,
        "a pe-dr flow run pauses to ask for approval",
        {"Paused", "Suspended"},
        sorted(FLOWS),
        (APPROVAL_SUBJECT, APPROVAL_BODY),
    )


def ensure_overdue_automation(block_name: str, lab: str, days: float) -> tuple[UUID, bool]:
    """Notify when no drill of `lab` has passed for `days`: each pass (flows.history's event)
    starts the window again, and with none the automation fires at its end, then once per
    window until a drill passes. The first window starts when the automation is made."""
    from prefect.automations import AutomationCore
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    block_id = find_notification_block(block_name)
    subject, body = overdue_text(lab, days)
    automation = AutomationCore(
        name=overdue_name(lab),
        description=(
            f"Sends to notification block {block_name!r} when no DR drill of lab {lab} has "
            f"passed for {_days(days)}. Managed by `pe-dr setup --notify`."
        ),
        enabled=True,
        trigger=EventTrigger(
            # the same event after and expected: each pass starts a new window (Prefect's
            # pattern for "expect the next heartbeat within")
            after={PASSED_EVENT},
            expect={PASSED_EVENT},
            match=ResourceSpecification({"prefect.resource.id": lab_resource(lab)}),
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(days=days),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
    )
    return _ensure(overdue_name(lab), automation)


def setup(spec: LabSpec, notify: str | None = None) -> SetupOutcome:
    outcome = SetupOutcome(limit=limit_name(spec), limit_created=ensure_lab_limit(spec))
    if notify:
        from pe_dr.settings import settings

        days = settings().overdue_days
        _, outcome.automation_created = ensure_failure_automation(notify)
        outcome.automation = AUTOMATION_NAME
        outcome.more[APPROVAL_NAME] = ensure_approval_automation(notify)[1]
        outcome.more[overdue_name(spec.name)] = ensure_overdue_automation(notify, spec.name, days)[
            1
        ]
    return outcome
