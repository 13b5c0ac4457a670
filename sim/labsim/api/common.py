"""What several PE services share: who the caller is, and where a replica answers apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labsim.http import Request
from labsim.state import ADMIN_ID

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


def auth(lab: Lab, req: Request, vm: VM | None = None) -> dict[str, Any] | None:
    """The caller: an allowlisted host certificate acts for PE itself; else the RBAC token's user.

    On the replica, while the primary is down, whether its RBAC still accepts a token is not
    documented (real-world-findings §4.1 row 2): labsim refuses it (the stricter answer) unless
    the fault `replica:accepts-tokens` gives the other one."""
    pe = lab.pe
    if pe is None:
        return None
    if infra_cert(lab, req):
        return pe.users.get(ADMIN_ID)
    token = req.headers.get("x-authentication") or req.query.get("token")
    if vm is not None and on_replica_alone(lab, vm) and not lab.faults.has("replica-tokens"):
        return None
    return pe.token_user(token)


def infra_cert(lab: Lab, req: Request) -> bool:
    """A client certificate of one of PE's own servers: PE puts the certnames of its primary and
    replica on the allowlists of PuppetDB (`certificate-allowlist`), of RBAC and the classifier
    (`rbac-certificate-allowlist`) and of the status API (PE module profile/puppetdb.pp,
    profile/console.pp; real-world-findings §4.1 rows 1-2, §4.4)."""
    pe = lab.pe
    return (
        pe is not None
        and req.client_cert is not None
        and req.client_cert in {pe.primary, pe.replica}
    )


def on_replica_alone(lab: Lab, vm: VM) -> bool:
    """`vm` is an enabled replica whose primary does not serve (the outage a drill makes)."""
    pe = lab.pe
    return bool(
        pe is not None
        and pe.replica == vm.name
        and pe.replica_enabled
        and not pe.promoted
        and not lab.vms[pe.primary].serving
    )


def read_only(lab: Lab, vm: VM) -> bool:
    return lab.pe is not None and vm.name != lab.pe.primary


def orchestrator_inactive(lab: Lab, vm: VM) -> bool:
    """The replicated orchestrator on an enabled replica is inactive until promotion."""
    pe = lab.pe
    return bool(pe and vm.name == pe.replica and not pe.promoted)


def merge(target: dict[str, Any], delta: dict[str, Any]) -> None:
    """A classifier delta merged into `target`: a null value removes the key."""
    for k, v in delta.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = v
