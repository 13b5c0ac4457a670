"""Teardown, the clean-up: destroy the lab's VMs named in `confirm`."""

from __future__ import annotations

from flows.approval import Ask
from flows.common import chapter
from flows.params import TeardownParameters
from pe_dr.errors import PreconditionError
from pe_dr.lab.spec import LabSpec
from tasks import vms
from tasks.common import named


@chapter()
def teardown(spec: LabSpec, parameters: TeardownParameters) -> dict[str, str]:
    """Destroy the lab's VMs named in `confirm`."""
    confirm, approve = list(parameters.confirm), Ask.of(parameters)
    if not confirm:
        raise PreconditionError("teardown destroys VMs: name them in `confirm` (--yes)")
    order = [*spec.agents, spec.replica, spec.gitlab, spec.primary]
    approve(f"destroy {', '.join(h.name for h in order if h.name in confirm)} (irreversible)")
    done = {}
    for host in order:
        if host.name in confirm:
            named(vms.destroy_vm, f"destroy {host.name}")(spec, host.name, confirm)
            done[host.name] = "destroyed"
    return done
