"""Whether the lab is in the state a flow needs, and whole (a primary a crash left halted).

Plain Python over a Lab: look, act only if needed; tasks makes a Prefect task of each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pe_dr.errors import PeDrError, PreconditionError
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.steps.code_manager import code_manager_answers
from pe_dr.steps.promotion import is_primary
from pe_dr.steps.replica import replica_enabled
from pe_dr.steps.vms import ensure_vm_up

AS_BUILT = "as built"  # the spec's primary is PE's primary
SWAPPED = "swapped"  # a promotion made the spec's replica the primary, reprotect its replica again
PROMOTED = "promoted"  # the spec's replica is the primary and the other one is not its replica
PRIMARY_LOST = "primary lost"  # the primary is gone and the replica was not promoted


@dataclass(frozen=True)
class LabRoles:
    """Which of the lab's two PE servers PE runs as its primary now, read from PE itself (only
    the primary runs the file sync storage service), and what that means for the next drill."""

    spec: LabSpec  # the lab with its roles as they are now
    state: str
    detail: str
    # what PE on the primary says it is (/opt/puppetlabs/server/pe_version), beside the spec's
    pe_version: str | None = None

    def refusal(self, flow: str) -> str | None:
        """One sentence: why `flow` must not run on the lab as it is, and what to run instead."""
        name = self.spec.name
        primary, other = self.spec.primary.name, self.spec.replica.name
        if self.state == PROMOTED and flow not in {"reprotect", "teardown", "promotion"}:
            return (
                f"lab {name} was promoted: {primary} is PE's primary and {other} is not its "
                "replica yet; run reprotect first (`pe-dr reprotect --yes`, or the deployment "
                "reprotect/rebuild-replica)"
            )
        if self.state == PRIMARY_LOST and flow not in {"promotion", "teardown"}:
            return (
                f"lab {name} lost its primary {primary} and {other} was not promoted: finish the "
                "promotion (Retry the promotion's run, or the deployment promotion/promote-replica)"
            )
        return None


def require_lab_state(
    lab: Lab,
    flow: str,
    *,
    running: tuple[str, ...] = (),
    code_manager: bool = False,
    replica: bool = False,
) -> str:
    """Refuse, in one sentence, to run `flow` on a lab that is not in the state it needs."""
    states = lab.vagrant.status()
    for name in running:
        vm = lab.spec.host(name).name
        if states.get(vm) != "running":
            raise PreconditionError(
                f"{flow} needs {vm} running but it is {states.get(vm, 'unknown')}: "
                "run lab_setup first"
            )
    if code_manager and not code_manager_answers(lab):
        raise PreconditionError(
            f"{flow} needs Code Manager on {lab.spec.primary.name}: run code_manager_setup first"
        )
    if replica and not replica_enabled(lab):
        raise PreconditionError(
            f"{flow} needs {lab.spec.replica.name} enabled as a replica: "
            "run replica_activation first"
        )
    return "ready"


def restore_primary(lab: Lab) -> str | None:
    """Start the primary if a drill left it halted (a crash mid-failover); None if it was not."""
    primary = lab.spec.primary.name
    state = lab.vagrant.state(primary)
    if state in {"running", "not_created"}:
        return None
    ensure_vm_up(lab, primary)
    return f"{primary} was {state}; started it again so the lab is whole"


def lab_roles(lab: Lab) -> LabRoles:
    """The lab's roles as PE has them now (see _roles), and the PE version its primary reports."""
    try:  # every running VM's SSH settings in one `vagrant ssh-config`, as pre-flight would
        states = lab.vagrant.status()
        lab.prefetch_hosts([h.name for h in lab.spec.hosts if states.get(h.name) == "running"])
    except PeDrError:
        pass  # the roles say why they could not be read
    roles = _roles(lab)
    return replace(roles, pe_version=pe_version_of(lab, roles.spec.primary.name))


PE_VERSION_FILE = "/opt/puppetlabs/server/pe_version"  # PE's own record; peadm reads it too


def pe_version_of(lab: Lab, server: str) -> str | None:
    """The PE version `server` reports, or None when it cannot say (not running, not PE yet)."""
    try:
        if lab.vagrant.status().get(server) != "running":
            return None
        out = lab.host(server).run(["cat", PE_VERSION_FILE], ok_codes=(0, 1), timeout=30)
    except PeDrError:
        return None
    version = out.stdout.strip()
    return version if out.exit_code == 0 and version else None


def _roles(lab: Lab) -> LabRoles:
    """The lab's roles as PE has them now. The spec names the roles the lab was built with; a
    promotion swaps them, and only PE knows it has happened (not a file the controller keeps):
    the primary is the server whose Puppet Server runs file sync storage (pe_dr.steps.promotion
    .is_primary). A lab not built yet, or whose servers cannot be read, keeps the spec's roles."""
    spec = lab.spec
    built, promoted = spec.primary.name, spec.replica.name
    try:
        states = lab.vagrant.status()
        if states.get(built) == "running" and is_primary(lab, built):
            return LabRoles(spec, AS_BUILT, f"{built} is PE's primary")
        if states.get(promoted) != "running" or not _answers_as_pe(lab, promoted):
            return LabRoles(spec, AS_BUILT, f"{built} is PE's primary (as built)")
        if is_primary(lab, promoted):
            swapped = spec.with_primary(promoted)
            protected = states.get(built) == "running" and _enabled(lab, promoted, built)
            if protected:
                detail = f"{promoted} is PE's primary since a promotion, {built} its replica"
                return LabRoles(swapped, SWAPPED, detail)
            state = states.get(built, "unknown")
            detail = f"{promoted} is PE's primary since a promotion; {built} is {state}, not its "
            return LabRoles(swapped, PROMOTED, detail + "replica")
        if states.get(built) == "not_created":
            detail = f"{built} is not created and {promoted}, a PE server, was not promoted"
            return LabRoles(spec, PRIMARY_LOST, detail)
    except PeDrError as exc:
        return LabRoles(spec, AS_BUILT, f"the roles could not be read ({exc}); as built")
    return LabRoles(spec, AS_BUILT, f"{built} is PE's primary (as built)")


def _answers_as_pe(lab: Lab, server: str) -> bool:
    """Whether a PE Puppet Server answers on `server` (its status service on 8140)."""
    try:
        with lab.pe(server, token_file=None) as pe:
            return bool(pe.services(8140))
    except PeDrError:
        return False


def _enabled(lab: Lab, primary: str, replica: str) -> bool:
    """PE on `primary` lists `replica` among its enabled replicas (False when it cannot say)."""
    try:
        return replica_enabled(lab, primary=primary, replica=replica)
    except PeDrError:
        return False
