"""Every flow by its Prefect name, for commands that find a flow from a stored flow run."""

from __future__ import annotations

from typing import Any

from prefect import Flow

from flows.code_manager_setup import code_manager_setup
from flows.dr_drill import dr_drill
from flows.failover_drill import failover_drill
from flows.lab_setup import lab_setup
from flows.primary_and_replica_settings import primary_and_replica_settings
from flows.promotion import promotion
from flows.replica_activation import replica_activation
from flows.replication_check import replication_check
from flows.reprotect import reprotect
from flows.teardown import teardown

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
