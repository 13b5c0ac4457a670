"""Tasks that activate the replica: provision and enable, secret keys, agent configuration."""

from __future__ import annotations

from pe_dr import actions
from pe_dr.actions import KeyCopy
from pe_dr.lab import Lab
from pe_dr.spec import LabSpec
from tasks.common import lab_task


@lab_task(timeout=7200, delays=(30, 60, 120))
def ensure_replica_enabled(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.ensure_replica_enabled(live)


@lab_task(timeout=300)
def ensure_secret_keys_copied(lab: LabSpec) -> list[KeyCopy]:
    with Lab(lab) as live:
        return actions.ensure_secret_keys_copied(live)


@lab_task(timeout=3600)
def ensure_agent_config_pushed(lab: LabSpec, poll_interval: float = 2.0) -> dict[str, list[str]]:
    with Lab(lab) as live:
        return actions.ensure_agent_config_pushed(live, interval=poll_interval)


@lab_task(timeout=7200, retries=1, delays=(60,))
def promote_replica(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.promote_replica(live)


@lab_task(timeout=300)
def ensure_client_tools_point_at(lab: LabSpec, server: str) -> list[str]:
    with Lab(lab) as live:
        return actions.ensure_client_tools_point_at(live, server)


@lab_task(timeout=1800)
def forget_old_primary(lab: LabSpec) -> str:
    with Lab(lab) as live:
        return actions.forget_old_primary(live)


@lab_task(timeout=3600)
def converge_agents(lab: LabSpec) -> dict[str, str]:
    """A Puppet run on every agent so that it takes the new primary's configuration."""
    with Lab(lab) as live:
        for agent in lab.agents:
            actions.run_puppet(live, agent.name)
    return {a.name: "ran" for a in lab.agents}
