"""One drill per lab: a strict Prefect global concurrency limit named after the lab.

A root flow run holds the limit `pe-dr-lab-<lab name>` (one slot) while it touches the lab; a
second run on the same lab waits for it and gives up, in one sentence, after the lock wait
(`PE_DR_LAB_LOCK_WAIT_SECONDS`, default 1800 s).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from pe_dr.errors import ConfigError, PeDrError
from pe_dr.spec import LabSpec

LOCK_WAIT_ENV = "PE_DR_LAB_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 1800.0
# Renewed while held; a killed drill's slot frees itself this long after the kill.
LEASE_SECONDS = 60.0


class LabBusy(PeDrError):
    """Another drill held the lab for longer than this run was willing to wait."""


def limit_name(spec: LabSpec) -> str:
    return f"pe-dr-lab-{spec.name}"


def lock_wait_seconds() -> float:
    raw = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_WAIT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{LOCK_WAIT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{LOCK_WAIT_ENV} must be more than 0 seconds, not {raw}")
    return value


def ensure_lab_limit(spec: LabSpec) -> bool:
    """Create the lab's limit (1 slot) unless it exists; True when it was created now.

    An existing limit is left as it is (an operator may have changed it on purpose).
    """
    name = limit_name(spec)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
            )
        except ObjectAlreadyExists:  # another drill created it a moment ago
            return False
    return True


@contextlib.contextmanager
def holding_lab(spec: LabSpec) -> Iterator[None]:
    """Hold the lab's slot for the block; wait at most the lock wait, then raise LabBusy."""
    wait = lock_wait_seconds()
    ensure_lab_limit(spec)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(
                concurrency(
                    limit_name(spec),
                    occupy=1,
                    timeout_seconds=wait,
                    strict=True,
                    lease_duration=LEASE_SECONDS,
                )
            )
        except TimeoutError:
            raise LabBusy(
                f"another drill holds lab {spec.name}; gave up after {wait:g} s "
                f"(limit {limit_name(spec)})"
            ) from None
        yield


def release_lab(spec: LabSpec) -> bool:
    """Free the lab's slot held by a run whose process was killed; True when one was held.

    Only for a run known to be dead: a local (ephemeral) Prefect server does not expire leases.
    """
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(limit_name(spec))
        except ObjectNotFound:
            return False
        if not limit.active_slots:
            return False
        client.update_global_concurrency_limit(
            limit_name(spec), GlobalConcurrencyLimitUpdate(active_slots=0)
        )
    return True
