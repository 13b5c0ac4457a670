"""`pe-dr setup`: the server-side objects the deployments rely on, created idempotently.

- the global concurrency limit `pe-dr-lab-<lab name>` (1 slot): one drill per lab;
- with a notification block name, the automation that notifies it when a `dr-drill` run ends
  Failed or Crashed.

The user creates the notification block (it holds the webhook URL, a secret); this only names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

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


@dataclass
class SetupOutcome:
    limit: str
    limit_created: bool
    automation: str | None = None
    automation_created: bool = False


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


def ensure_failure_automation(block_name: str) -> tuple[UUID, bool]:
    """Create or update the automation; True when it was created now."""
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    block_id = find_notification_block(block_name)
    automation = AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            f"Sends to notification block {block_name!r} when a {DRILL_FLOW} flow run ends "
            "Failed or Crashed. Managed by `pe-dr setup --notify`."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related=ResourceSpecification(
                {"prefect.resource.id": "prefect.flow.*", "prefect.resource.name": DRILL_FLOW}
            ),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            return existing[0].id, False
        return client.create_automation(automation), True


def setup(spec: LabSpec, notify: str | None = None) -> SetupOutcome:
    outcome = SetupOutcome(limit=limit_name(spec), limit_created=ensure_lab_limit(spec))
    if notify:
        _, outcome.automation_created = ensure_failure_automation(notify)
        outcome.automation = AUTOMATION_NAME
    return outcome
