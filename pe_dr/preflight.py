"""Pre-flight: before any step acts on the lab, check what would otherwise fail late.

A drill on a fresh lab spends an hour building it before the failover drill refuses a `confirm`
that does not name the primary; a report directory that cannot be written loses the journal at
the very end. Pre-flight checks, in seconds and reading only:

* the report directory can take a journal: a real journal's worth of bytes (`PROBE_BYTES`) is
  written there, synced and removed, so a full disk fails here, before the primary is halted;
* the secrets the flow needs exist (the environment now; the Prefect Secret block too, when run
  as the flow's first step);
* vagrant is installed, and VirtualBox would accept the lab's host-only addresses;
* `confirm` names every VM the run will halt or destroy, and only VMs of the lab;
* a VM the run would create finds the passwords its provisioning reads from the environment;
* the credentials earlier drills stored on a running lab are still accepted: the admin RBAC
  token on the primary and the GitLab API token. A refused admin token is renewed by the drill
  with the console password, so it fails pre-flight only when PE also refuses that password (a
  short-lived login, 5 minutes, proves it); a refused GitLab token is renewed without a password
  (gitlab-rails), so it is only noted. A lab not yet built has neither, which is fine.

Each problem is one sentence; `PreflightFailed` (a ConfigError: exit code 2) carries them all.
The lab lock (free, or held by a live run) is checked by the flows layer, which owns the lock.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pe_dr.errors import ApiError, ConfigError, PeDrError
from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import HostSpec, LabSpec
from pe_dr.lab.vagrant import find_vagrant
from pe_dr.lab.virtualbox import require_host_only_addresses
from pe_dr.secrets import ENV_NAMES, GITLAB_ROOT_PASSWORD, PE_CONSOLE_PASSWORD, get_secret

# Passwords the Vagrantfile's provisioning reads from the environment, by the VM role that needs
# them (Vagrantfile: PROVISION_ENV).
PROVISION_SECRETS = {"primary": PE_CONSOLE_PASSWORD, "gitlab": GITLAB_ROOT_PASSWORD}


@dataclass(frozen=True)
class Needs:
    """What a flow run will need and do, for its pre-flight (small, picklable: a task input)."""

    flow: str
    confirm: tuple[str, ...] = ()
    halts: tuple[str, ...] = ()
    destroys: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()  # canaries whose firewall the run changes
    secrets: tuple[str, ...] = ()
    report_dir: str | None = None
    creates_vms: bool = False
    credentials: bool = True


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Outcome) -> Outcome:
        self.problems += other.problems
        self.notes += other.notes
        return self


# flow -> (halts the primary, destroys the primary, needs the console password, creates VMs)
_FLOWS: dict[str, tuple[bool, bool, bool, bool]] = {
    "lab-setup": (False, False, False, True),
    "code-manager-setup": (False, False, True, False),
    "primary-and-replica-settings": (False, False, True, False),
    "replica-activation": (False, False, True, False),
    "replication-check": (False, False, False, False),
    "failover-drill": (True, False, False, False),
    "promotion": (False, True, True, False),
    "reprotect": (False, False, True, True),
    "teardown": (False, False, False, False),
    "dr-drill": (True, False, True, True),
    "canary-drill": (False, False, False, False),
}


def needs_for(
    flow: str,
    spec: LabSpec,
    *,
    confirm: list[str] | tuple[str, ...] = (),
    promote: bool = False,
    report_dir: str | None = None,
) -> Needs:
    halts, destroys, password, creates = _FLOWS[flow]
    primary = spec.primary.name
    destroyed: tuple[str, ...] = (primary,) if destroys or promote else ()
    if flow == "teardown":
        destroyed = tuple(confirm)
    return Needs(
        flow=flow,
        confirm=tuple(confirm),
        halts=(primary,) if halts else (),
        destroys=destroyed,
        blocks=tuple(h.name for h in spec.canaries) if flow == "canary-drill" else (),
        secrets=(PE_CONSOLE_PASSWORD,) if password or promote else (),
        report_dir=report_dir,
        creates_vms=creates,
        credentials=flow not in {"lab-setup", "teardown"},
    )


class PreflightFailed(ConfigError):
    """Pre-flight found problems: nothing was done to the lab. One sentence each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def __reduce__(self) -> tuple[type[PreflightFailed], tuple[list[str]]]:
        return (PreflightFailed, (self.problems,))


JOURNAL_BYTES = 256 * 1024  # a long drill's journal (with a retry's steps) is under 100 KiB


def report_dir_problem(directory: str) -> str | None:
    """Why the journal could not be written to `directory` (created when missing), or None."""
    folder = Path(directory)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            return f"the report directory {directory} cannot be created: {existing} is not a folder"
        # a real journal's worth of bytes, flushed to the disk: a read-only mount or a full disk
        # shows here, even to root (creating an empty file or folder needs no free block)
        with tempfile.TemporaryFile(prefix=".pe-dr-preflight-", dir=existing) as probe:
            probe.write(b"\0" * JOURNAL_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"the report directory {directory} is not writable ({exc.strerror or exc})"
    return None


def confirm_problems(spec: LabSpec, needs: Needs) -> list[str]:
    problems = []
    if needs.flow == "teardown" and not needs.confirm:
        problems.append("teardown destroys VMs: name them in `confirm` (--yes on the command line)")
    names = {h.name for h in spec.hosts}
    for action, vms in (
        ("halt", needs.halts),
        ("destroy", needs.destroys),
        ("block the primary from", needs.blocks),
    ):
        for vm in vms:
            if vm not in needs.confirm:  # the sentence the step itself would say, an hour later
                problems.append(
                    f"refusing to {action} {vm}: the run must name it in `confirm` "
                    "(--yes on the command line)"
                )
    for vm in needs.confirm:
        if vm not in names:
            problems.append(
                f"`confirm` names {vm}, which is not a VM of lab {spec.name} "
                f"(its VMs: {', '.join(sorted(names))})"
            )
    return problems


def local(spec: LabSpec, needs: Needs, *, secret_blocks: bool = True) -> Outcome:
    """The checks that need neither the lab nor Prefect (milliseconds). Without `secret_blocks`
    a secret missing from the environment is left to the flow's own pre-flight, which can also
    look in the Prefect Secret blocks."""
    out = Outcome()
    if needs.report_dir:
        problem = report_dir_problem(needs.report_dir)
        if problem:
            out.problems.append(problem)
    for name in needs.secrets:
        if not secret_blocks and not os.environ.get(ENV_NAMES.get(name, name)):
            out.notes.append(f"{ENV_NAMES.get(name, name)} is not set: looking for the block")
            continue
        try:  # (also refuses a secret with a line break)
            get_secret(name)
        except ConfigError as exc:
            out.problems.append(str(exc))
    out.problems += confirm_problems(spec, needs)
    if spec.installation:  # no vagrant, no VirtualBox: nothing is built
        return out
    if spec.vagrant_root and not Path(spec.vagrant_root).is_dir():
        out.problems.append(
            f"the lab's vagrant_root {spec.vagrant_root} is not a folder (it holds the Vagrantfile)"
        )
    try:
        find_vagrant()
    except ConfigError as exc:
        out.problems.append(str(exc))
    try:
        require_host_only_addresses(spec)
    except ConfigError as exc:
        out.problems.append(str(exc))
    return out


def on_the_lab(spec: LabSpec, needs: Needs) -> Outcome:
    """The checks that read the lab: VM states, provisioning passwords, stored credentials."""
    if spec.installation:
        return on_the_installation(spec, needs)
    out = Outcome()
    with Lab(spec) as lab:
        try:
            states = lab.vagrant.status()
        except PeDrError as exc:
            out.problems.append(f"vagrant cannot read the lab's VMs: {exc}")
            return out
        missing = [h.name for h in spec.hosts if h.name not in states]
        if missing:
            out.problems.append(
                f"{missing[0]} is not a machine of the Vagrantfile in {lab.vagrant.root} "
                f"(machines: {', '.join(sorted(states)) or 'none'})"
            )
            return out
        if needs.creates_vms:
            for host in spec.hosts:
                secret = PROVISION_SECRETS.get(str(host.role))
                env = ENV_NAMES.get(secret or "", "")
                if secret and states[host.name] == "not_created" and not os.environ.get(env):
                    out.problems.append(
                        f"{host.name} is not created yet and its provisioning reads {env} from "
                        "the environment, which does not set it"
                    )
        up = [h.name for h in spec.hosts if states.get(h.name) == "running"]
        # every running VM's SSH settings from this one vagrant call: the steps after find them
        # remembered (pe_dr.lab.live) rather than starting vagrant once per VM
        lab.prefetch_hosts(up)
        silent = _not_answering(lab, up)
        if silent:
            out.problems += silent
            return out
        if needs.credentials:
            primary, gitlab = spec.primary.name, spec.gitlab.name
            running = [vm for vm in (primary, gitlab) if states.get(vm) == "running"]
            if primary in running:
                out.extend(_admin_token(lab))
            if gitlab in running:
                out.extend(_gitlab_token(lab))
    return out


# a VM on a host-only network answers a TCP connect in milliseconds; one that drops packets
# would otherwise cost every later step its full SSH timeout
CONNECT_SECONDS = 5.0


def _not_answering(lab: Lab, names: list[str]) -> list[str]:
    """One sentence per running VM whose SSH port does not take a TCP connection within
    CONNECT_SECONDS, all tried at once (so the check takes CONNECT_SECONDS at most)."""

    def reach(name: str) -> str | None:
        try:
            ssh = lab.host(name).ssh
        except PeDrError as exc:
            return f"{name}: vagrant gives no SSH settings for it ({exc})"
        try:
            socket.create_connection((ssh.host, ssh.port), timeout=CONNECT_SECONDS).close()
        except TimeoutError:
            return (
                f"{name} is running but its SSH port {ssh.host}:{ssh.port} did not answer "
                f"within {CONNECT_SECONDS:g} s (packets dropped?)"
            )
        except OSError as exc:
            return (
                f"{name} is running but its SSH port {ssh.host}:{ssh.port} cannot be reached "
                f"({exc.strerror or exc})"
            )
        return None

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        return [p for p in pool.map(reach, names) if p is not None]


def _admin_token(lab: Lab) -> Outcome:
    out = Outcome()
    primary = lab.spec.primary.name
    try:
        if not lab.host(primary).exists(paths.ADMIN_TOKEN, root=True):
            return out  # not made yet: the drill logs in when it gets there
        token = lab.token(primary, paths.ADMIN_TOKEN)
        with lab.pe(primary, token_file=None) as pe:
            try:
                valid = pe.token_is_valid(token)
            except ApiError as exc:
                if exc.status not in (400, 401, 403):
                    raise
                valid = False
            if valid:
                return out
            try:
                password = get_secret(PE_CONSOLE_PASSWORD)
            except ConfigError:
                out.notes.append(f"the stored admin token on {primary} is refused")
                return out  # the missing secret is the flow's own problem, if it needs it
            try:
                pe.login(lab.spec.console_admin, password, lifetime="5m", label=None)
            except ApiError as exc:
                if exc.status != 401:
                    raise
                out.problems.append(
                    f"PE on {primary} refuses the stored admin token and the password of "
                    f"{lab.spec.console_admin!r} (check the Secret block pe-console-password or "
                    "PE_CONSOLE_PASSWORD)"
                )
                return out
        out.notes.append(f"the stored admin token on {primary} is refused; the drill renews it")
    except PeDrError as exc:
        out.notes.append(f"could not check the stored admin token on {primary}: {exc}")
    return out


def _gitlab_token(lab: Lab) -> Outcome:
    out = Outcome()
    gitlab = lab.spec.gitlab.name
    try:
        token = lab.gitlab_token()
        if token is None:
            return out
        with lab.gitlab(token) as gl:
            try:
                gl.current_user()
            except ApiError as exc:
                if exc.status not in (401, 403):
                    raise
                out.notes.append(
                    f"the stored GitLab API token on {gitlab} is refused; the drill renews it"
                )
    except PeDrError as exc:
        out.notes.append(f"could not check the stored GitLab API token on {gitlab}: {exc}")
    return out


# The drill compares times taken on the hosts (PuppetDB's report times, a block's start) with the
# controller's: a skew larger than this would misplace a run before or after the fault.
MAX_CLOCK_SKEW_SECONDS = 2.0


def on_the_installation(spec: LabSpec, needs: Needs) -> Outcome:
    """An installation's hosts, all at once: each takes an SSH login and `sudo -n`, its clock
    agrees with the controller's, and each canary has the firewall tool of its block (nft)."""
    out = Outcome()
    with Lab(spec) as lab:

        def look(host: HostSpec) -> list[str]:
            try:
                skew = _clock_skew(lab, host.name)
            except PeDrError as exc:
                return [f"{host.name}: no SSH login ({exc})"]
            problems = []
            if skew is not None and abs(skew) > MAX_CLOCK_SKEW_SECONDS:
                side = "ahead of" if skew > 0 else "behind"
                problems.append(
                    f"{host.name}'s clock is {abs(skew):.1f} s {side} the controller's (at most "
                    f"{MAX_CLOCK_SKEW_SECONDS:g} s: the drill dates the fleet's runs against the "
                    "fault)"
                )
            try:
                lab.host(host.name).run(["true"], root=True, timeout=30)
            except PeDrError as exc:
                return [*problems, f"{host.name}: `sudo -n` refused ({exc})"]
            if host.canary and host.name in needs.blocks:
                try:
                    lab.host(host.name).run(["nft", "--version"], root=True, timeout=30)
                except PeDrError:
                    problems.append(
                        f"{host.name} is a canary without nft (nftables), which its "
                        "self-expiring block needs"
                    )
            return problems

        with ThreadPoolExecutor(max_workers=min(16, len(spec.hosts))) as pool:
            for problems in pool.map(look, spec.hosts):
                out.problems += problems
    return out


def _clock_skew(lab: Lab, name: str) -> float | None:
    """The host's clock minus the controller's, in seconds (None: its answer was not a time)."""
    before = time.time()
    answer = lab.host(name).run(["date", "+%s.%N"], timeout=30).stdout.strip()
    after = time.time()
    try:
        remote = float(answer)
    except ValueError:
        return None
    # the host read its clock somewhere between `before` and `after`
    if before <= remote <= after:
        return 0.0
    return remote - (after if remote > after else before)
