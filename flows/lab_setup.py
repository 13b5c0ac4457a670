"""Lab set-up: bring the lab's VMs up in dependency order."""

from __future__ import annotations

from prefect.futures import wait

from flows.common import chapter
from flows.params import LabSetupParameters
from pe_dr.lab.spec import LabSpec
from tasks import vms
from tasks.common import named


@chapter()
def lab_setup(spec: LabSpec, parameters: LabSetupParameters) -> dict[str, str]:
    """Bring the lab's VMs up: the box first (parallel first runs race on its import), then the
    VMs in waves (pe_dr.steps.vms.bring_up_order: on a first run the primary alone)."""
    vms.ensure_box(spec)
    states: dict[str, str] = {}
    for wave in vms.bring_up_order(spec):
        ups = [named(vms.ensure_vm_up, f"vm-up {name}").submit(spec, name) for name in wave]
        wait(ups)  # every VM of the wave settles before the first failure is raised
        for name, up in zip(wave, ups, strict=True):
            states[name] = up.result()
    return states
