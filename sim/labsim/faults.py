"""Fault specs: parsing and the live fault table of a lab.

Each fault models a way the real system breaks, with its source:

* `replication:broken`, `replication:lag=N`: file sync to the replica fails or is late; with a lag
  every deploy reaches the replica N s after it was made, in order (PE file sync, PDF-2021.7.1
  p.830-831).
* `replication:STORE=broken`, `replication:STORE=N` (STORE: classifier, rbac, puppetdb): one
  replicated store stops replicating, or reaches the replica N s late (labsim/replication.py has
  each store's source). A broken classifier or RBAC replication is also reported as PE reports it
  (`status.replication.status: inactive`, an error alert: peadm spec/fixtures/infrastatus.json);
  what PE's status says of a failing PuppetDB sync is not in our sources, so labsim says nothing.
* `failover:broken`: the replica is missing from the agents' server_list, as a bad
  classification of PE Agent / PE Infrastructure Agent would leave it (PDF-2021.7.1 p.271-277).
* `replica:unhealthy`: a replica service raises an error-severity alert while its state stays
  `running`; `replica:db-replication-inactive`: the primary's classifier, RBAC, activity and
  orchestrator report "Database replication for X is inactive" (peadm
  spec/fixtures/infrastatus.json, real output).
* PE's other possible answers, where its behaviour is not documented and labsim takes the
  stricter one by default (real-world-findings §4.1 rows 2-3): `replica:accepts-tokens` (the
  replica's RBAC and classifier accept an RBAC token while the primary is down; by default they
  refuse it), `replica:says-read-only` (a classification edit on the replica is refused with an
  error that names the read-only replica; by default with a bare "Permission denied").
  `replica:classifier-writable`: a replica that accepts a classification edit, which a drill must
  catch and undo.
* `halt:ignored=VM` (keeps serving), `halt:hang=VM` (accepts TCP, never answers: agents wait their
  http_connect_timeout), `halt:unreachable=VM` (no route: agents report EHOSTUNREACH): how a
  halted VM can look (real-world-findings §2, measured with Puppet 7.23). The default is the
  tutorial's: connections refused.
* `agent:fact-error[=VM]`: a failing custom fact; the run prints `Error:` lines and still applies
  its catalog, exit 0 (real-world-findings §2).
* `fail:OP[@VM][=N]`, `slow:OP=S`: an operation fails (N times) or takes S modelled seconds longer,
  less if the fault is cleared meanwhile (`slow:puppetdb.start=S`: a booted PE server's PuppetDB
  reports `starting` S s longer, as after a restart: status API states, PDF-2021.7.1 p.436-441;
  peadm PR #681).
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

from labsim.clock import Clock

OPERATIONS: dict[str, str] = {
    "vagrant.up": "vagrant up VM (boot, install)",
    "vagrant.halt": "vagrant halt VM",
    "vagrant.destroy": "vagrant destroy VM",
    "vagrant.ssh-config": "vagrant ssh-config VM",
    "vagrant.snapshot": "vagrant snapshot save|restore VM",
    "vagrant.box": "vagrant box list|add",
    "vagrant.hostonly": "creating the lab's host-only interface (its first vagrant up)",
    "ssh.connect": "an SSH connection to a VM (closed during the handshake)",
    "ssh.exec": "any command executed over SSH",
    "puppet.access.login": "puppet access login",
    "puppet.agent": "puppet agent -t",
    "puppet.infrastructure.configure": "puppet infrastructure configure",
    "puppet.infrastructure.provision": "puppet infrastructure provision replica",
    "puppet.infrastructure.enable": (
        "puppet infrastructure enable replica (and provision --enable)"
    ),
    "puppet.infrastructure.status": "puppet infrastructure status",
    "puppet.infrastructure.promote": "puppet infrastructure promote replica",
    "puppet.infrastructure.forget": "puppet infrastructure forget",
    "puppet.node.purge": "puppet node purge",
    "puppetserver.ca.sign": "puppetserver ca sign",
    "puppet.job.run": "puppet job run",
    "puppet-code.deploy": "puppet-code deploy",
    "git.push": "git push to gitlab.vm",
    "gitlab.rails-runner": "gitlab-rails runner FILE",
    "gitlab.webhook": "GitLab's delivery of a project hook",
    "api.rbac": "RBAC API (4433 /rbac-api)",
    "api.classifier": "node classifier API (4433 /classifier-api)",
    "api.code-manager": "Code Manager API (8170)",
    "api.orchestrator": "orchestrator API (8143)",
    "api.puppetdb": "PuppetDB API (8081)",
    "api.status": "status API (/status/v1)",
    "api.gitlab": "GitLab REST API (/api/v4)",
    "filesync": "file sync of deployed code to the replica",
    "puppetdb.start": "PuppetDB starting after its server boots (status `starting`)",
}

_VM = r"[a-z0-9][a-z0-9.-]*"


class FaultSpecError(ValueError):
    """A fault spec that does not parse."""


@dataclass
class Fault:
    spec: str
    kind: str  # replication-broken, replication-lag, failover-broken, replica-unhealthy,
    # db-replication-inactive, halt-ignored, halt-hang, halt-unreachable, fact-error, fail, slow
    op: str = ""
    vm: str = ""
    remaining: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "op": self.op,
            "vm": self.vm,
            "remaining": self.remaining,
            "seconds": self.seconds,
        }


def parse_fault(spec: str) -> Fault:
    text = spec.strip()
    if text == "replication:broken":
        return Fault(text, "replication-broken")
    if text == "failover:broken":
        return Fault(text, "failover-broken")
    if text == "replica:unhealthy":
        return Fault(text, "replica-unhealthy")
    if text == "replica:db-replication-inactive":
        return Fault(text, "db-replication-inactive")
    if text == "replica:accepts-tokens":
        return Fault(text, "replica-tokens")
    if text == "replica:says-read-only":
        return Fault(text, "replica-says-read-only")
    if text == "replica:classifier-writable":
        return Fault(text, "replica-classifier-writable")
    m = re.fullmatch(rf"agent:fact-error(?:=({_VM}))?", text)
    if m:
        return Fault(text, "fact-error", vm=m.group(1) or "")
    m = re.fullmatch(r"replication:(classifier|rbac|puppetdb)=(broken|\d+(?:\.\d+)?)", text)
    if m:
        if m.group(2) == "broken":
            return Fault(text, "store-broken", op=m.group(1))
        return Fault(text, "store-lag", op=m.group(1), seconds=float(m.group(2)))
    m = re.fullmatch(r"replication:lag=(\d+(?:\.\d+)?)", text)
    if m:
        return Fault(text, "replication-lag", seconds=float(m.group(1)))
    m = re.fullmatch(rf"halt:(ignored|hang|unreachable)=({_VM})", text)
    if m:
        return Fault(text, f"halt-{m.group(1)}", vm=m.group(2))
    m = re.fullmatch(rf"fail:([a-z0-9.-]+)(?:@({_VM}))?(?:=(\d+))?", text)
    if m:
        op = m.group(1)
        if op not in OPERATIONS:
            raise FaultSpecError(f"bad fault spec {spec!r}: unknown operation {op!r}")
        count = int(m.group(3)) if m.group(3) is not None else None
        return Fault(text, "fail", op=op, vm=m.group(2) or "", remaining=count)
    m = re.fullmatch(r"slow:([a-z0-9.-]+)=(\d+(?:\.\d+)?)", text)
    if m:
        op = m.group(1)
        if op not in OPERATIONS:
            raise FaultSpecError(f"bad fault spec {spec!r}: unknown operation {op!r}")
        return Fault(text, "slow", op=op, seconds=float(m.group(2)))
    raise FaultSpecError(f"bad fault spec {spec!r}")


def check_vms(fault: Fault, vms: list[str]) -> None:
    """Refuse a fault that names a VM the lab does not have."""
    if fault.vm and fault.vm not in vms:
        raise FaultSpecError(
            f"bad fault spec {fault.spec!r}: the lab has no VM {fault.vm!r} "
            f"(its VMs: {', '.join(vms)})"
        )


class FaultTable:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def has(self, kind: str, vm: str = "") -> bool:
        """A fault of `kind` (for `vm`, or for every VM when the fault names none)."""
        return any(f.kind == kind and (not vm or not f.vm or f.vm == vm) for f in self.faults)

    def lag(self) -> float | None:
        lags = [f.seconds for f in self.faults if f.kind == "replication-lag"]
        return max(lags) if lags else None

    def has_store(self, store: str, what: str) -> bool:
        """A `replication:STORE=broken` fault (what="broken") for `store`."""
        return any(f.kind == f"store-{what}" and f.op == store for f in self.faults)

    def store_lag(self, store: str) -> float | None:
        lags = [f.seconds for f in self.faults if f.kind == "store-lag" and f.op == store]
        return max(lags) if lags else None

    def should_fail(self, op: str, vm: str) -> bool:
        for f in self.faults:
            if f.kind != "fail" or f.op != op or (f.vm and f.vm != vm):
                continue
            if f.remaining is None:
                return True
            if f.remaining > 0:
                f.remaining -= 1
                return True
        return False

    def slow(self, op: str) -> float:
        return sum(f.seconds for f in self.faults if f.kind == "slow" and f.op == op)


# the faults an SSH exec met, by VM: journaled once, by the exec (labsim/commands/shell.py)
EXEC_FAULTS: contextvars.ContextVar[dict[str, list[str]] | None] = contextvars.ContextVar(
    "EXEC_FAULTS", default=None
)


class LabFaults(Clock):
    """The lab's faults: the table, and whether an operation on a VM fails now."""

    faults: FaultTable

    def fault(self, op: str, vm: str, detail: str = "") -> bool:
        if self.faults.should_fail(op, vm):
            pending = EXEC_FAULTS.get()
            if pending is not None and vm in pending:
                pending[vm].append(op)  # journaled once by the SSH exec that hit it
            else:
                self.journal(vm, op, "fault", detail or f"injected failure of {op}")
            return True
        return False
