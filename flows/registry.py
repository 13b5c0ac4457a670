"""Every flow by its Prefect name, for commands that find a flow from a stored flow run."""

from __future__ import annotations

from typing import Any

from prefect import Flow

from flows.dr_drill import dr_drill
from flows.drills import failover_drill, promotion, replication_check, reprotect, teardown
from flows.setup import (
    code_manager_setup,
    lab_setup,
    primary_and_replica_settings,
    replica_activation,
)

FLOWS: dict[str, Flow[..., Any]] = {
    f.name: f
    for f in (
        lab_setup,
        code_manager_setup,
        primary_and_replica_settings,
        replica_activation,
        replication_check,
        failover_drill,
        promotion,
        reprotect,
        teardown,
        dr_drill,
    )
}
