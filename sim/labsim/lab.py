"""The lab: VMs, their lifecycle (vagrant), listeners, journal, faults, code deploys."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import io
import json
import secrets
import shutil
import ssl
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from labsim import pki
from labsim.faults import FaultTable, parse_fault
from labsim.http import HTTPServer
from labsim.puppetdb import PuppetDBs
from labsim.replication import Replication
from labsim.state import GitLabState, PEState, now_iso
from labsim.vfs import VMFS

Emit = Callable[[str, str], None]
EXEC_FAULTS: contextvars.ContextVar[dict[str, list[str]] | None] = contextvars.ContextVar(
    "EXEC_FAULTS", default=None
)

KEY_FILES = (
    "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json",
    "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
    "/etc/puppetlabs/console-services/conf.d/secrets/keys.json",
)
KEY_OWNERS = ("pe-orchestration-services", "pe-orchestration-services", "pe-console-services")
SSLDIR = "/etc/puppetlabs/puppet/ssl"
CA_PATH = f"{SSLDIR}/certs/ca.pem"
PUPPET_CONF = "/etc/puppetlabs/puppet/puppet.conf"
REPO_REL = "var/opt/gitlab/git-data/repositories"

PE_VERSION = "2025.8.0"  # the PE labsim models (the tutorial's; findings §4 are of 2025.x)
DURATIONS = {
    "install.primary": 1200.0,
    "install.replica": 480.0,
    "install.agent": 180.0,
    "install.gitlab": 900.0,
    "box": 300.0,  # downloading and importing ubuntu/jammy64 (~600 MB) on a first run
    "boot": 60.0,
    "halt": 10.0,
    "hostonly": 5.0,  # VBoxManage hostonlyif create, on the lab's first `vagrant up`
    "destroy": 5.0,
    "provision": 900.0,
    "enable": 120.0,
    "promote": 1200.0,
    "forget": 60.0,
    "agent": 30.0,
    "deploy": 10.0,
    "configure": 60.0,
    "status": 2.0,
    "login": 1.0,
    "rails-runner": 20.0,
    "reconfigure": 60.0,
    # PuppetDB reports `starting` after its server boots, before it serves (the status API's
    # states, PDF-2021.7.1 p.436-441; peadm PR #681 waits out this window after provisioning)
    "puppetdb.start": 30.0,
}


# Vagrant 2.3's words when a machine it is asked to SSH into is not running.
NOT_READY_FOR_SSH = (
    "The provider for this Vagrant-managed machine is reporting that it\n"
    "is not yet ready for SSH. Depending on your provider this can carry\n"
    "different meanings. Make sure your machine is created and running and\n"
    "try again. Additionally, check the output of `vagrant status` to verify\n"
    "that the machine is in the state that you expect. If you continue to\n"
    "get this error message, please view the documentation for the provider\n"
    "you're using.\n"
)


@dataclass
class VM:
    name: str
    role: str
    address: str
    fs: VMFS
    state: str = "not_created"
    serving: bool = False
    installed: bool = False  # PE/agent/GitLab installed by provisioning
    ssh_port: int = 22
    ssh_server: Any = None
    ssh_conns: set[Any] = field(default_factory=set)
    http: dict[int, HTTPServer] = field(default_factory=dict)
    hung: dict[int, asyncio.Server] = field(default_factory=dict)  # halted, accepting, silent
    hung_conns: set[asyncio.StreamWriter] = field(default_factory=set)
    host_keys: list[asyncssh.SSHKey] = field(default_factory=list)
    ssl_ctx: ssl.SSLContext | None = None
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    # one reconcile at a time: a fault added during `vagrant up` would bind its ports twice
    listening: asyncio.Lock = field(default_factory=asyncio.Lock)
    booted_at: float = 0.0  # epoch of the last boot: PE's services start after it

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[0]


def _ts() -> str:
    return str(int(time.time()))


def _already_provisioned(vm: str) -> str:
    """What `vagrant up` says of a VM it did not create this time."""
    return (
        f"==> {vm}: Machine already provisioned. Run `vagrant provision` or use the `--provision`\n"
        f"==> {vm}: flag to force provisioning. Provisioners marked to run always will still run.\n"
    )


class Lab:
    def __init__(self, state_dir: Path, cfg: dict[str, Any]) -> None:
        self.dir = state_dir
        self.cfg = cfg
        self.name = cfg["name"]
        self.scale = float(cfg.get("time_scale", 0.001))
        self.faults = FaultTable()
        for spec in cfg.get("faults", []):
            self.faults.add(parse_fault(spec))
        self.journal_path = state_dir / "journal.jsonl"
        self.console_password: str = cfg["console_password"]
        self.gitlab_password: str = cfg["gitlab_password"]
        self.gitlab_port: int = int(cfg.get("gitlab_http_port", 80))
        self.pe: PEState | None = None
        self.gitlab: GitLabState | None = None
        self.replication = Replication()
        self.puppetdb = PuppetDBs()
        # group id -> edits a replica accepted (fault replica:classifier-writable)
        self.replica_group_edits: dict[str, dict[str, Any]] = {}
        self.gitlab_secrets: list[str] = []
        self.vms: dict[str, VM] = {}
        # A fresh workstation has no box; `vagrant box add` or the first `vagrant up` fetches it.
        self.boxes: set[str] = set(cfg.get("boxes", []))
        self.box_importing = False
        # the host-only interface exists once a VM was created; its first `vagrant up` makes it
        self.hostonly_ready = any(
            (state_dir / "vms" / h["name"] / "meta.json").exists() for h in cfg["hosts"]
        )
        self.hostonly_creating = False
        self._sync_seq = 0
        self._last_sync: asyncio.Task[Any] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.children: set[int] = set()
        self.sshd: Any = None  # labsim.sshd module, set by daemon (avoids import cycle)
        self.api: Any = None
        for h in cfg["hosts"]:
            vdir = state_dir / "vms" / h["name"]
            fs = VMFS(vdir / "fs", vdir / "meta.json")
            fs.root.mkdir(parents=True, exist_ok=True)
            self.vms[h["name"]] = VM(h["name"], h["role"], h["address"], fs)
        self.ca_pem = (state_dir / "ca" / "ca.pem").read_bytes()
        for vm in self.vms.values():
            kdir = state_dir / "vms" / vm.name / "keys"
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(kdir / "cert.pem", kdir / "key.pem")
            # Jetty's `client-auth: want` on PE's ports: a certificate signed by the lab CA is
            # verified when sent, a request without one goes on to token authentication
            # (real-world-findings §4.4; PE's services authorise certnames on allowlists).
            ctx.load_verify_locations(cadata=self.ca_pem.decode())
            ctx.verify_mode = ssl.CERT_OPTIONAL
            vm.ssl_ctx = ctx
            vm.host_keys = [
                asyncssh.read_private_key(str(p)) for p in sorted(kdir.glob("ssh_host_*_key"))
            ]
        self.lab_key = asyncssh.read_private_key(str(state_dir / "insecure_private_key"))

    # -- basics -----------------------------------------------------------------------------------
    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def sleep(self, model_seconds: float, op: str = "") -> None:
        started = time.time()
        await asyncio.sleep(model_seconds * self.scale)
        extra = self.faults.slow(op) if op else 0.0
        if extra:
            extra = await self._slowed(op, extra)
        self.record_sleep(started, time.time(), model_seconds + extra, op)

    async def _slowed(self, op: str, model_seconds: float) -> float:
        """A `slow:` fault's extra wait, cut short when the fault is cleared (a test ends a step
        it slowed so, rather than waiting it out); the modelled seconds it waited."""
        began = time.monotonic()
        end = began + model_seconds * self.scale
        while (left := end - time.monotonic()) > 0 and self.faults.slow(op):
            await asyncio.sleep(min(left, 0.1))
        return min(model_seconds, (time.monotonic() - began) / self.scale)

    def record_sleep(self, started: float, ended: float, model_seconds: float, op: str) -> None:
        """Every modelled wait, for benchmarks: real start and end (epoch), modelled seconds."""
        entry = {"t0": started, "t1": ended, "model": model_seconds, "op": op}
        with (self.dir / "sleeps.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def dur(self, key: str) -> float:
        return DURATIONS[key]

    def journal(self, vm: str, op: str, outcome: str, detail: str = "") -> None:
        entry = {
            "time": dt.datetime.now(dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "vm": vm,
            "op": op,
            "outcome": outcome,
            "detail": detail,
        }
        with self.journal_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def fault(self, op: str, vm: str, detail: str = "") -> bool:
        if self.faults.should_fail(op, vm):
            pending = EXEC_FAULTS.get()
            if pending is not None and vm in pending:
                pending[vm].append(op)  # journaled once by the SSH exec that hit it
            else:
                self.journal(vm, op, "fault", detail or f"injected failure of {op}")
            return True
        return False

    def vm_by_host(self, host: str) -> VM | None:
        host = host.strip().lower()
        for vm in self.vms.values():
            if host in (vm.name, vm.short, vm.address):
                return vm
        return None

    def role_vm(self, role: str) -> VM:
        return next(v for v in self.vms.values() if v.role == role)

    def client_ssl(self, cafile_pems: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        for pem in cafile_pems or []:
            ctx.load_verify_locations(cadata=pem)
        return ctx

    async def tcp_open(self, vm: VM | None, port: int) -> bool:
        if vm is None:
            return False
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(vm.address, port), 2)
        except (OSError, TimeoutError):
            return False
        w.close()
        return True

    # -- listeners --------------------------------------------------------------------------------
    def desired_ports(self, vm: VM) -> set[int]:
        if not vm.serving or not vm.installed:
            return set()
        pe = self.pe
        if vm.role == "gitlab":
            return {self.gitlab_port}
        if pe is None:
            return set()
        if vm.name == pe.primary:
            ports = {8140, 4433, 8142, 8143, 8081, 443}
            if pe.cm_active:
                ports.add(8170)
            return ports
        if vm.name == pe.replica and pe.replica_enabled:
            # An enabled replica runs the PCP broker agents fail over to (pcp_broker_list gains
            # it) and the replicated orchestrator, inactive until promotion (PE HA/DR overview;
            # peadm plans/add_replica.pp; real-world-findings §1 row 3).
            return {8140, 4433, 8081, 8142, 8143}
        return set()

    def set_serving(self, vm: VM, serving: bool) -> None:
        """A VM starts or stops serving: PuppetDB's syncs due until now happen first."""
        self.puppetdb.tick(self)
        vm.serving = serving

    def puppetdb_starting(self, vm: VM) -> bool:
        """PuppetDB on a PE server still `starting` after the VM booted (`slow:puppetdb.start=S`
        lengthens it)."""
        window = DURATIONS["puppetdb.start"] + self.faults.slow("puppetdb.start")
        return vm.serving and time.time() < vm.booted_at + window * self.scale

    def hung_ports(self, vm: VM) -> set[int]:
        """A halted VM under `halt:hang` accepts TCP on every port it served and never answers
        (a hung host, a SIGSTOPped server, a full backlog: real-world-findings §2)."""
        if vm.serving or vm.state == "not_created" or not self.faults.has("halt-hang", vm.name):
            return set()
        return {22, 8140, 4433, 8142, 8143, 8081, 443, 8170}

    async def reconcile(self, vm: VM) -> None:
        """Listeners as the VM's state says: what stops first, then the silent listeners of a
        hung VM, then what starts (they share ports)."""
        async with vm.listening:
            await self._reconcile(vm)

    async def _reconcile(self, vm: VM) -> None:
        want = self.desired_ports(vm)
        for port in list(vm.http):
            if port not in want:
                vm.http.pop(port).close()
        if not vm.serving and vm.ssh_server is not None:
            vm.ssh_server.close()
            await vm.ssh_server.wait_closed()
            vm.ssh_server = None
            for conn in list(vm.ssh_conns):
                conn.abort()
            vm.ssh_conns.clear()
        await self._reconcile_hung(vm)
        for port in sorted(want - set(vm.http)):
            tls = None if vm.role == "gitlab" else vm.ssl_ctx
            server = HTTPServer(self.api.handler_for(self, vm, port), tls)
            await server.start(vm.address, port)
            vm.http[port] = server
        if vm.serving and vm.ssh_server is None:
            await self.sshd.start(self, vm)

    async def _reconcile_hung(self, vm: VM) -> None:
        want = self.hung_ports(vm)
        for port in list(vm.hung):
            if port not in want:
                vm.hung.pop(port).close()
        if not want:
            for writer in list(vm.hung_conns):
                writer.transport.abort()
            vm.hung_conns.clear()
            return

        async def accept_and_wait(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            vm.hung_conns.add(writer)
            try:
                await reader.read()  # never answers; returns when the client gives up
            finally:
                vm.hung_conns.discard(writer)
                writer.transport.abort()

        for port in sorted(want - set(vm.hung)):
            vm.hung[port] = await asyncio.start_server(accept_and_wait, vm.address, port)

    async def apply_faults(self) -> None:
        """Faults take effect when added or cleared, on a fresh or a built lab."""
        pe = self.pe
        if pe is not None and pe.replica and pe.replica_enabled and not pe.promoted:
            # failover:broken is a classification that leaves the replica out of server_list
            servers = (
                [pe.primary] if self.faults.has("failover-broken") else [pe.primary, pe.replica]
            )
            if pe.agent_params(False).get("server_list") != [f"{s}:8140" for s in servers]:
                pe.set_agent_servers(servers)
                self.journal("", "classifier.agent-servers", "ok", ",".join(servers))
        for vm in self.vms.values():
            if vm.state == "poweroff" and vm.installed:
                self.set_serving(vm, self.faults.has("halt-ignored", vm.name))
            await self.reconcile(vm)

    async def reconcile_all(self) -> None:
        for vm in self.vms.values():
            await self.reconcile(vm)

    async def shutdown(self) -> None:
        for vm in self.vms.values():
            vm.serving = False
            for port in list(vm.http):
                vm.http.pop(port).close()
            for server in vm.hung.values():
                server.close()
            for writer in list(vm.hung_conns):
                writer.transport.abort()
            if vm.ssh_server is not None:
                vm.ssh_server.close()
                vm.ssh_server = None
            for conn in list(vm.ssh_conns):
                conn.abort()
        for task in list(self.tasks):
            task.cancel()

    # -- vagrant --------------------------------------------------------------------------------
    def state_human(self, state: str) -> tuple[str, str]:
        longs = {
            "running": "The VM is running. To stop this VM, you can run `vagrant halt` to\n"
            "shut it down forcefully, or you can run `vagrant suspend` to simply\n"
            "suspend the virtual machine. In either case, to restart it again,\n"
            "simply run `vagrant up`.",
            "poweroff": "The VM is powered off. To restart the VM, simply run `vagrant up`",
            "not_created": "The environment has not yet been created. Run `vagrant up` to\n"
            "create the environment. If a machine is not created, only the default\n"
            "provider will be shown. So if a provider is not listed, then the\n"
            "machine is not created for that environment.",
            "saved": "The VM is in a saved state. To resume it, run `vagrant up`.",
            "aborted": "The VM is in an aborted state. This means that it was abruptly\n"
            "stopped without properly closing the session. Run `vagrant up` to resume.",
        }
        return state.replace("_", " "), longs.get(state, state)

    async def vagrant(self, args: list[str], emit: Emit, *, primary: str | None = None) -> int:
        """A `vagrant` command line; `primary` is the caller's PE_DR_PRIMARY, which the
        project's Vagrantfile reads to provision a VM by its current role."""
        args = [
            a for a in args if a not in ("--machine-readable", "--no-color", "--no-tty", "--color")
        ]
        if not args:
            emit("err", "Usage: vagrant [options] <command> [<args>]\n")
            return 1
        # one entry per invocation: on a real lab each costs ~0.8 s of Ruby start-up (`make bench`)
        self.journal("", "vagrant.command", "ok", " ".join(args))
        cmd, rest = args[0], args[1:]
        if cmd in ("--version", "-v"):
            emit("out", "Vagrant 2.4.1\n")
            return 0
        if cmd == "version":
            emit(
                "out",
                "Installed Version: 2.4.1\nLatest Version: 2.4.1\n \n"
                "You're running an up-to-date version of Vagrant!\n",
            )
            return 0
        if cmd == "validate":
            emit("out", "Vagrantfile validated successfully.\n")
            return 0
        names = [a for a in rest if not a.startswith("-")]
        flags = [a for a in rest if a.startswith("-")]
        if cmd == "snapshot":
            return await self.snapshot(names, emit)
        if cmd == "box":
            return await self.box(rest, emit)
        for n in names[:1] if cmd != "status" else names:
            if n not in self.vms:
                if cmd == "status":
                    emit(
                        "out",
                        f"{_ts()},,error-exit,Vagrant::Errors::MachineNotFound,"
                        f"The machine with the name '{n}' was not found configured for\\n"
                        "this Vagrant environment.\n",
                    )
                emit(
                    "err",
                    f"The machine with the name '{n}' was not found configured for\n"
                    "this Vagrant environment.\n",
                )
                return 1
        targets = [self.vms[n] for n in names] if names else list(self.vms.values())
        if cmd == "status":
            return self.vagrant_status(targets, emit)
        if cmd == "ssh-config":
            return self.ssh_config(targets, emit)
        if cmd == "up":
            rc = 0
            results = await asyncio.gather(*(self.up(vm, emit, primary) for vm in targets))
            for r in results:
                rc = rc or r
            return rc
        if cmd == "halt":
            force = "--force" in flags or "-f" in flags
            for vm in targets:
                rc = await self.halt(vm, force, emit)
                if rc:
                    return rc
            return 0
        if cmd == "destroy":
            for vm in targets:
                rc = await self.destroy(vm, emit)
                if rc:
                    return rc
            return 0
        if cmd == "ssh":
            emit("err", "labsim: use ssh-config and a real SSH client\n")
            return 1
        emit("err", f"Vagrant does not know the command '{cmd}' (labsim)\n")
        return 1

    async def box(self, args: list[str], emit: Emit) -> int:
        """`vagrant box list [--machine-readable]` and `vagrant box add NAME [--provider P]`, in
        the formats of hashicorp/vagrant plugins/commands/box (python-vagrant parses `list`)."""
        ts = _ts()
        if args[:1] == ["list"]:
            self.journal("", "vagrant.box", "ok", "list")
            if not self.boxes:
                emit("out", f"{ts},,ui,info,There are no installed boxes! Use `vagrant box add`\n")
                return 0
            for name in sorted(self.boxes):
                emit(
                    "out",
                    f"{ts},,ui,info,{name} (virtualbox%!(VAGRANT_COMMA) 20240301.0.0)\n"
                    f"{ts},,box-name,{name}\n{ts},,box-provider,virtualbox\n"
                    f"{ts},,box-version,20240301.0.0\n",
                )
            return 0
        names = [a for a in args[1:] if not a.startswith("-") and a != "virtualbox"]
        if args[:1] != ["add"] or not names:
            emit("err", "Usage: vagrant box <subcommand> [<args>] (labsim: list, add)\n")
            return 1
        name = names[0]
        if self.fault("vagrant.box", "", f"box add {name}"):
            emit("err", f"An error occurred while downloading the remote file {name} (fault)\n")
            return 1
        if name in self.boxes:
            emit(
                "err",
                "The box you're attempting to add already exists. Remove it before\n"
                "adding it again or add it with the `--force` flag.\n\n"
                f"Name: {name}\nProvider: virtualbox\nVersion: 20240301.0.0\n",
            )
            return 1
        emit("out", f"==> box: Loading metadata for box '{name}'\n==> box: Adding box ...\n")
        await self.sleep(self.dur("box"), "vagrant.box")
        self.boxes.add(name)
        self.journal("", "vagrant.box", "ok", f"added {name}")
        emit("out", f"==> box: Successfully added box '{name}' (v20240301.0.0) for 'virtualbox'!\n")
        return 0

    def vagrant_status(self, targets: list[VM], emit: Emit) -> int:
        ts = _ts()
        out = []
        for vm in targets:
            self.journal(vm.name, "vagrant.status", "ok", vm.state)
            short, long = self.state_human(vm.state)
            long = long.replace(",", "%!(VAGRANT_COMMA)").replace("\n", "\\n")
            out += [
                f"{ts},{vm.name},metadata,provider,virtualbox",
                f"{ts},{vm.name},provider-name,virtualbox",
                f"{ts},{vm.name},state,{vm.state}",
                f"{ts},{vm.name},state-human-short,{short}",
                f"{ts},{vm.name},state-human-long,{long}",
            ]
        out.append(f"{ts},,ui,info,Current machine states:")
        for vm in targets:
            short, _ = self.state_human(vm.state)
            out.append(f"{ts},,ui,info,{vm.name:<25} {short} (virtualbox)")
        emit("out", "\n".join(out) + "\n")
        return 0

    def ssh_config(self, targets: list[VM], emit: Emit) -> int:
        for vm in targets:
            if self.fault("vagrant.ssh-config", vm.name):
                emit("err", NOT_READY_FOR_SSH)
                return 1
            if vm.state != "running":
                self.journal(vm.name, "vagrant.ssh-config", "failed", f"state {vm.state}")
                emit("err", NOT_READY_FOR_SSH)
                return 1
            self.journal(vm.name, "vagrant.ssh-config", "ok", "")
            key = self.dir / "insecure_private_key"
            emit(
                "out",
                f"Host {vm.name}\n  HostName {vm.address}\n  User vagrant\n  Port {vm.ssh_port}\n"
                "  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n"
                f"  PasswordAuthentication no\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                "  LogLevel FATAL\n  PubkeyAcceptedKeyTypes +ssh-rsa\n"
                "  HostKeyAlgorithms +ssh-rsa\n\n",
            )
        return 0

    def _vagrant_fail(self, vm: VM, op: str, emit: Emit) -> int:
        emit(
            "err",
            f"There was an error while executing `VBoxManage`, a CLI used by Vagrant\n"
            "for controlling VirtualBox. The command and stderr is shown below.\n\n"
            f'Command: ["{op}", "{vm.name}"]\n\n'
            "Stderr: VBoxManage: error: The machine is locked by a session (injected fault)\n",
        )
        return 1

    async def up(self, vm: VM, emit: Emit, primary: str | None = None) -> int:
        n = vm.name
        if self.fault("vagrant.up", n):
            return self._vagrant_fail(vm, "startvm", emit)
        async with vm.busy:
            emit("out", f"Bringing machine '{n}' up with 'virtualbox' provider...\n")
            if vm.state == "running":
                emit("out", _already_provisioned(n))
                self.journal(n, "vagrant.up", "ok", "already running")
                return 0
            fresh = vm.state == "not_created"
            if fresh and "ubuntu/jammy64" not in self.boxes:
                # Parallel first runs race on the box import (mrcmn/puppet-upandrun README;
                # real-world-findings §1 row 8): the second `vagrant up` fails on VirtualBox's
                # lock of the base disk while the first imports it.
                if self.box_importing:
                    self.journal(n, "vagrant.up", "failed", "box import in progress (lock race)")
                    emit(
                        "err",
                        "There was an error while executing `VBoxManage`, a CLI used by Vagrant\n"
                        "for controlling VirtualBox. The command and stderr is shown below.\n\n"
                        'Command: ["import", "box.ovf", "--vsys", "0", "--vmname", '
                        f'"ubuntu-jammy-{n}"]\n\n'
                        "Stderr: VBoxManage: error: Medium 'ubuntu-jammy-22.04-cloudimg.vmdk' is "
                        "locked for reading by another task\n",
                    )
                    return 1
                emit(
                    "out",
                    f"==> {n}: Box 'ubuntu/jammy64' could not be found. Attempting to find and "
                    "install...\n",
                )
                self.box_importing = True
                try:
                    await self.sleep(self.dur("box"), "vagrant.box")
                finally:
                    self.box_importing = False
                self.boxes.add("ubuntu/jammy64")
            if fresh and not await self.hostonly_network(n, emit):
                return 1
            if fresh:
                emit(
                    "out",
                    f"==> {n}: Importing base box 'ubuntu/jammy64'...\n"
                    f"==> {n}: Matching MAC address for NAT networking...\n"
                    f"==> {n}: Setting the name of the VM: puppet-upandrun_{n}\n",
                )
                self.populate_base(vm)
            emit(
                "out",
                f"==> {n}: Clearing any previously set network interfaces...\n"
                f"==> {n}: Preparing network interfaces based on configuration...\n"
                f"    {n}: Adapter 1: nat\n    {n}: Adapter 2: hostonly\n"
                f"==> {n}: Booting VM...\n==> {n}: Waiting for machine to boot. "
                "This may take a few minutes...\n",
            )
            await self.sleep(self.dur("boot"), "vagrant.up")
            vm.state = "running"
            vm.booted_at = time.time()
            self.set_serving(vm, True)
            await self.reconcile(vm)
            emit(
                "out",
                f"    {n}: SSH address: {vm.address}:{vm.ssh_port}\n"
                f"    {n}: SSH username: vagrant\n    {n}: SSH auth method: private key\n"
                f"==> {n}: Machine booted and ready!\n",
            )
            if not fresh:
                emit("out", _already_provisioned(n))
                self.journal(n, "vagrant.up", "ok", "booted")
                if self.pe and n == self.pe.replica:
                    self.sync_replica()
                return 0
            emit(
                "out", f"==> {n}: Running provisioner: shell...\n    {n}: Running: inline script\n"
            )
            rc = await self.provision_vm(vm, emit, primary)
            self.journal(n, "vagrant.up", "ok" if rc == 0 else "failed", "created")
            return rc

    async def hostonly_network(self, vm: str, emit: Emit) -> bool:
        """The lab's VirtualBox host-only interface, created by the first `vagrant up` that
        needs it. Parallel first runs each create one, duplicates with the same address, and
        the lab's network breaks (cilium/cilium#8208, Parallels/vagrant-parallels#148,
        hashicorp/vagrant#2068; real-world-findings §4.2 row 9): the later one fails here."""
        if self.hostonly_ready:
            return True
        if self.hostonly_creating:
            self.journal(vm, "vagrant.up", "failed", "duplicate host-only interface (race)")
            emit(
                "err",
                f"==> {vm}: Creating a host-only network interface...\n"
                "The host-only network interface vboxnet1 was created with the address of "
                "vboxnet0, which another `vagrant up` created at the same time: VirtualBox now "
                "has two host-only interfaces on the lab's network and routes its traffic to "
                "one of them.\n",
            )
            return False
        self.hostonly_creating = True
        try:
            emit("out", f"==> {vm}: Creating a host-only network interface...\n")
            await self.sleep(self.dur("hostonly"), "vagrant.hostonly")
            self.hostonly_ready = True
        finally:
            self.hostonly_creating = False
        return True

    async def provision_vm(self, vm: VM, emit: Emit, primary: str | None = None) -> int:
        """The Vagrantfile's provisioning: the VM PE_DR_PRIMARY names (the spec's primary by
        default) installs PE; every other PE host installs the agent from that primary. Without
        PE_DR_PRIMARY, a lost primary rebuilt after a promotion installs a second, empty PE
        primary, as the Vagrantfile would."""
        n = vm.name
        installs_pe = vm.name == primary if primary else vm.role == "primary"
        if installs_pe:
            emit("out", f"    {n}: Installing Puppet Enterprise {PE_VERSION} ...\n")
            await self.sleep(self.dur("install.primary"))
            self.install_pe_primary(vm)
            emit("out", f"    {n}: Puppet Enterprise installed. Console: https://{n}\n")
        elif vm.role == "gitlab":
            emit("out", f"    {n}: Installing gitlab-ce ...\n")
            await self.sleep(self.dur("install.gitlab"))
            self.gitlab = GitLabState(root_password=self.gitlab_password)
            vm.fs.write("/etc/gitlab/gitlab.rb", f"external_url 'http://{vm.address}'\n", 0o600)
            (vm.fs.root / REPO_REL).mkdir(parents=True, exist_ok=True)
            vm.installed = True
            emit("out", f"    {n}: gitlab Reconfigured!\n")
        else:
            source = self.vms.get(primary or "") or (
                self.vms.get(self.pe.primary) if self.pe else self.role_vm("primary")
            )
            await self.sleep(
                self.dur("install.replica" if vm.role == "replica" else "install.agent")
            )
            if self.pe is None or not await self.tcp_open(source, 8140):
                pname = source.name if source else "primary.vm"
                emit("out", f"    {n}:   % Total    % Received % Xferd  Average Speed   Time\n")
                emit(
                    "err",
                    f"    {n}: curl: (7) Failed to connect to {pname} port 8140: "
                    "Connection refused\n"
                    "The SSH command responded with a non-zero exit status. Vagrant\n"
                    "assumes that this means the command failed. The output for this command\n"
                    "should be in the log above. Please read the output to determine what\n"
                    "went wrong.\n",
                )
                return 1
            self.install_agent(vm)
            emit("out", f"    {n}: Notice: Applied catalog in 3.21 seconds\n")
        await self.reconcile(vm)
        return 0

    def populate_base(self, vm: VM) -> None:
        fs = vm.fs
        for d in ("/home/vagrant", "/root", "/tmp", "/etc", "/var"):
            fs.host(d).mkdir(parents=True, exist_ok=True)
        fs.host("/tmp").chmod(0o777)
        fs.host("/root").chmod(0o700)
        fs.host("/home/vagrant").chmod(0o755)
        fs.set_owner("/home/vagrant", "vagrant", "vagrant")
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{v.address} {v.name} {v.short}\n" for v in self.vms.values()
        )
        fs.write("/etc/hosts", hosts)

    def install_pe_files(self, vm: VM) -> None:
        fs = vm.fs
        fs.write(CA_PATH, self.ca_pem)
        # The host's own certificate and key, where Puppet keeps them (`puppet config print
        # hostcert hostprivkey`: $ssldir/certs/<certname>.pem, $ssldir/private_keys/...).
        kdir = self.dir / "vms" / vm.name / "keys"
        fs.write(f"{SSLDIR}/certs/{vm.name}.pem", (kdir / "cert.pem").read_bytes())
        fs.write(f"{SSLDIR}/private_keys/{vm.name}.pem", (kdir / "key.pem").read_bytes(), 0o640)
        fs.host("/etc/puppetlabs/code/environments").mkdir(parents=True, exist_ok=True)
        fs.host("/opt/puppetlabs/bin").mkdir(parents=True, exist_ok=True)
        primary = self.pe.primary if self.pe else "primary.vm"
        fs.write(PUPPET_CONF, f"[agent]\nserver_list = {primary}:8140\n")

    def install_pe_primary(self, vm: VM) -> None:
        self.pe = PEState.install(vm.name, self.console_password)
        self.install_pe_files(vm)
        # PE's installer records its version here (peadm's upgrade plan reads it with
        # peadm::read_file: puppetlabs-peadm spec/plans/upgrade_spec.rb)
        vm.fs.write("/opt/puppetlabs/server/pe_version", f"{PE_VERSION}\n")
        fs = vm.fs
        for path, owner in zip(KEY_FILES, KEY_OWNERS, strict=True):
            content = json.dumps(
                [{"key": secrets.token_urlsafe(64)[:86], "id": str(uuid.uuid4())}],
                separators=(",", ":"),
            )
            fs.write(path, content, 0o640, owner, owner)
            self.pe.primary_keys[path] = content
        fs.host("/etc/puppetlabs/puppetserver/ssh").mkdir(parents=True, exist_ok=True)
        fs.write("/etc/puppetlabs/puppetserver/conf.d/webserver.conf", "webserver: {}\n")
        fs.write("/etc/puppetlabs/puppet/autosign.conf", "*\n")
        self.api.commands.write_client_tools(fs, vm.name)
        vm.installed = True

    def install_agent(self, vm: VM) -> None:
        """The agent from the primary. Its certificate is signed at once only where the primary
        autosigns (provision/primary.sh writes `*` to autosign.conf on the VM it installs; a
        promoted replica has none, so a new agent waits for `puppetserver ca sign`: Puppet's
        autosign docs, the tutorial lab's primarybootstrap script)."""
        assert self.pe is not None
        ca = self.vms[self.pe.primary]
        if "*" not in (ca.fs.read_text("/etc/puppetlabs/puppet/autosign.conf") or ""):
            self.pe.pending_certs.add(vm.name)
        self.install_pe_files(vm)
        if vm.name not in self.pe.nodes:
            self.pe.nodes.append(vm.name)
        vm.installed = True

    async def halt(self, vm: VM, force: bool, emit: Emit) -> int:
        n = vm.name
        if self.fault("vagrant.halt", n):
            return self._vagrant_fail(vm, "controlvm", emit)
        if vm.state != "running":
            self.journal(n, "vagrant.halt", "ok", f"already {vm.state}")
            return 0
        emit(
            "out",
            f"==> {n}: "
            + ("Forcing shutdown of VM" if force else "Attempting graceful shutdown of VM")
            + "...\n",
        )
        await self.sleep(1.0 if force else self.dur("halt"), "vagrant.halt")
        vm.state = "poweroff"
        if self.faults.has("halt-ignored", n):
            self.journal(n, "vagrant.halt", "ok", "halt ignored (fault): VM keeps serving")
            return 0
        if self.pe is not None and n == self.pe.primary:
            self.replication.mark_down()
        self.set_serving(vm, False)
        await self.reconcile(vm)
        how = (
            "hangs: accepts TCP, never answers (fault)"
            if self.faults.has("halt-hang", n)
            else "unreachable: no route (fault)"
            if self.faults.has("halt-unreachable", n)
            else "refuses connections"
        )
        self.journal(n, "vagrant.halt", "ok", f"{'forced' if force else 'graceful'}; {how}")
        return 0

    async def destroy(self, vm: VM, emit: Emit) -> int:
        n = vm.name
        if self.fault("vagrant.destroy", n):
            return self._vagrant_fail(vm, "unregistervm", emit)
        if vm.state == "not_created":
            emit("out", f"==> {n}: VM not created. Moving on...\n")
            self.journal(n, "vagrant.destroy", "ok", "not created")
            return 0
        if vm.state == "running":
            emit("out", f"==> {n}: Forcing shutdown of VM...\n")
        emit("out", f"==> {n}: Destroying VM and associated drives...\n")
        await self.sleep(self.dur("destroy"), "vagrant.destroy")
        vm.state = "not_created"
        self.set_serving(vm, False)
        vm.installed = False
        await self.reconcile(vm)
        vm.fs.wipe()
        if vm.role == "gitlab":
            self.gitlab = None
        if self.pe is not None and vm.name == self.pe.primary and not self.pe.replica:
            self.pe = None
        self.journal(n, "vagrant.destroy", "ok", "")
        return 0

    async def snapshot(self, args: list[str], emit: Emit) -> int:
        if not args or args[0] not in ("save", "restore", "list", "delete"):
            emit("err", "Usage: vagrant snapshot <subcommand> [<args>]\n")
            return 1
        sub, rest = args[0], args[1:]
        if sub == "list":
            targets = (
                [self.vms[rest[0]]] if rest and rest[0] in self.vms else list(self.vms.values())
            )
            for vm in targets:
                root = self.dir / "snapshots" / vm.name
                names = sorted(p.name for p in root.iterdir()) if root.exists() else []
                if not names:
                    emit("out", f"==> {vm.name}: No snapshots have been taken yet!\n")
                else:
                    emit("out", "".join(f"{x}\n" for x in names))
            return 0
        if len(rest) == 2:
            if rest[0] not in self.vms:
                emit(
                    "err",
                    f"The machine with the name '{rest[0]}' was not found configured for\n"
                    "this Vagrant environment.\n",
                )
                return 1
            targets, sname = [self.vms[rest[0]]], rest[1]
        elif len(rest) == 1:
            targets, sname = list(self.vms.values()), rest[0]
        else:
            emit("err", "Usage: vagrant snapshot save [options] [vm-name] <name>\n")
            return 1
        for vm in targets:
            if self.fault("vagrant.snapshot", vm.name):
                return self._vagrant_fail(vm, "snapshot", emit)
            sdir = self.dir / "snapshots" / vm.name / sname
            if sub == "save":
                if vm.state == "not_created":
                    continue
                if sdir.exists():
                    shutil.rmtree(sdir)
                shutil.copytree(vm.fs.root, sdir / "fs", symlinks=True)
                (sdir / "meta.json").write_text(
                    json.dumps(
                        {"owners": vm.fs.owners, "state": vm.state, "installed": vm.installed}
                    )
                )
                emit(
                    "out",
                    f"==> {vm.name}: Snapshotting the machine as '{sname}'...\n"
                    f"==> {vm.name}: Snapshot saved! You can restore the snapshot at any time by\n"
                    f"==> {vm.name}: using `vagrant snapshot restore`.\n",
                )
                self.journal(vm.name, "vagrant.snapshot", "ok", f"save {sname}")
            elif sub == "delete":
                shutil.rmtree(sdir, ignore_errors=True)
                emit("out", f"==> {vm.name}: Deleting the snapshot '{sname}'...\n")
            else:
                if not sdir.exists():
                    emit(
                        "err",
                        f"The snapshot name `{sname}` was not found for the\n"
                        f"virtual machine `{vm.name}`.\n",
                    )
                    return 1
                meta = json.loads((sdir / "meta.json").read_text())
                emit(
                    "out",
                    f"==> {vm.name}: Forcing shutdown of VM...\n"
                    f"==> {vm.name}: Restoring the snapshot '{sname}'...\n",
                )
                self.set_serving(vm, False)
                await self.reconcile(vm)
                shutil.rmtree(vm.fs.root, ignore_errors=True)
                shutil.copytree(sdir / "fs", vm.fs.root, symlinks=True)
                vm.fs.owners = meta["owners"]
                vm.fs.save()
                vm.installed = meta["installed"]
                await self.sleep(self.dur("boot"))
                vm.state = "running"
                vm.booted_at = time.time()
                self.set_serving(vm, True)
                await self.reconcile(vm)
                emit("out", f"==> {vm.name}: Machine booted and ready!\n")
                self.journal(vm.name, "vagrant.snapshot", "ok", f"restore {sname}")
        return 0

    # -- code: deploys and file sync ------------------------------------------------------------
    def repo_path(self, project_path: str) -> Path:
        return self.role_vm("gitlab").fs.root / REPO_REL / f"{project_path}.git"

    async def git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=str(cwd) if cwd else None,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.children.add(proc.pid)
        try:
            out, err = await proc.communicate(stdin)
        finally:
            self.children.discard(proc.pid)
        return proc.returncode or 0, out, err

    def r10k_problem(self, server: VM) -> str | None:
        """Why Code Manager on `server` cannot fetch the control repo, or None."""
        assert self.pe is not None
        params = self.pe.master_params()
        remote = params.get("r10k_remote")
        keypath = params.get("r10k_private_key")
        if not remote or not keypath:
            return "Code Manager is not configured: r10k_remote and r10k_private_key are required"
        gl_vm = self.role_vm("gitlab")
        if self.gitlab is None or not gl_vm.serving:
            return f"Unable to connect to {gl_vm.name}: Connection refused"
        try:
            key = asyncssh.import_private_key(server.fs.read(keypath))
        except (OSError, asyncssh.KeyImportError):
            return f"Failed to read private key {keypath}: No such file or directory"
        pub = key.export_public_key("openssh").decode().split()[1]
        if not any(k["key"].split()[1] == pub for k in self.gitlab.keys):
            return f"Permission denied (publickey) while fetching {remote}"
        known = params.get("r10k_known_hosts") or []
        host_pubs = {k.export_public_key("openssh").decode().split()[1] for k in gl_vm.host_keys}
        ok = any(
            isinstance(e, dict)
            and e.get("name") in (gl_vm.name, gl_vm.address)
            and e.get("key") in host_pubs
            for e in known
        )
        if not ok:
            return f"Host key verification failed for {gl_vm.name} (r10k_known_hosts)"
        path = remote.split(":", 1)[-1].removesuffix(".git")
        if self.gitlab.project(path) is None or not self.repo_path(path).exists():
            return f"Repository {remote} not found"
        return None

    async def deploy(self, server: VM, env: str, user: str) -> dict[str, Any]:
        """One Code Manager deploy on `server` (the current primary); waits for the primary."""
        assert self.pe is not None
        pe = self.pe
        pe.deploy_seq += 1
        did = pe.deploy_seq
        rec: dict[str, Any] = {
            "environment": env,
            "id": did,
            "status": "deploying",
            "queued-at": now_iso(),
        }
        pe.deploys[did] = rec
        await self.sleep(self.dur("deploy"), "api.code-manager")
        problem = self.r10k_problem(server)
        sha = ""
        if problem is None:
            remote = pe.master_params()["r10k_remote"]
            path = remote.split(":", 1)[-1].removesuffix(".git")
            bare = self.repo_path(path)
            rc, out, _ = await self.git(
                "--git-dir", str(bare), "rev-parse", "--verify", f"refs/heads/{env}"
            )
            if rc != 0:
                problem = f"Environment '{env}' not found in {remote} (no branch '{env}')"
            else:
                sha = out.decode().strip()
                rc, tar, _err = await self.git(
                    "--git-dir", str(bare), "archive", "--format=tar", sha
                )
                for base in (
                    "/etc/puppetlabs/code-staging/environments",
                    "/etc/puppetlabs/code/environments",
                ):
                    self.write_env(server, base, env, tar, sha)
        if problem is not None:
            rec.update(
                status="failed",
                error={
                    "kind": "puppetlabs.code-manager/deploy-failure",
                    "msg": f"Errors while deploying environment '{env}' (deploy failed): {problem}",
                    "details": {"corrected-name": env},
                },
            )
            self.journal(server.name, "code-manager.deploy", "failed", f"{env}: {problem}")
            return rec
        date = now_iso()
        pe.storage[env] = {"deploy-signature": sha, "date": date}
        pe.clients.setdefault(server.name, {})[env] = {"deploy-signature": sha, "date": date}
        rec.update(
            status="complete",
            **{
                "deploy-signature": sha,
                "file-sync": {
                    "environment-commit": secrets.token_hex(20),
                    "code-commit": secrets.token_hex(20),
                },
            },
        )
        self.journal(server.name, "code-manager.deploy", "ok", f"{env} {sha} by {user}")
        self.sync_replica()
        return rec

    def write_env(self, vm: VM, base: str, env: str, tar: bytes, sha: str) -> None:
        dest = vm.fs.host(f"{base}/{env}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(dest, filter="data")
        (dest / ".r10k-deploy.json").write_text(
            json.dumps(
                {
                    "name": env,
                    "signature": sha,
                    "started_at": now_iso(),
                    "finished_at": now_iso(),
                    "deploy_success": True,
                    "module_deploys": [],
                },
                indent=2,
            )
        )

    def sync_replica(self) -> None:
        """File sync of what the primary has deployed now, to the replica.

        The primary's code is snapshotted now and delivered after the lag (`replication:lag=N`,
        else about 5 modelled seconds), in order: each delivery waits for the one before it, so
        a later commit never reaches the replica before an earlier one, nor before its own lag.
        (PE file sync: the storage service commits, clients poll and fetch; PDF-2021.7.1
        p.830-831.)"""
        pe = self.pe
        if pe is None or not pe.replica or pe.promoted:
            return
        primary = self.vms[pe.primary]
        self._sync_seq += 1
        staged = self.dir / "filesync" / str(self._sync_seq)
        snapshot: dict[str, dict[str, str]] = {}
        for env, signature in pe.storage.items():
            src = primary.fs.host(f"/etc/puppetlabs/code/environments/{env}")
            if src.exists():
                shutil.copytree(src, staged / env, symlinks=True)
                snapshot[env] = dict(signature)
        before = self._last_sync
        self._last_sync = self.spawn(self._deliver(before, time.time(), staged, snapshot))

    def _sync_lag(self) -> float:
        lag = self.faults.lag()
        return lag if lag is not None else max(5.0 * self.scale, 0.2)

    async def _deliver(
        self,
        before: asyncio.Task[Any] | None,
        queued: float,
        staged: Path,
        snapshot: dict[str, dict[str, str]],
    ) -> None:
        try:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            started = time.time()
            # The lag is the replica's state now, not when the deploy was queued: once a slow
            # replica recovers (the fault is removed), its next poll fetches what is pending.
            while (left := queued + self._sync_lag() - time.time()) > 0:
                await asyncio.sleep(min(left, 0.1))
            delay = self._sync_lag()
            self.record_sleep(
                started, time.time(), delay / self.scale if self.scale else 0.0, "filesync"
            )
            pe = self.pe
            if pe is None or not pe.replica:
                return
            replica = self.vms[pe.replica]
            primary = self.vms[pe.primary]
            if self.faults.has("replication-broken") or self.fault("filesync", replica.name):
                self.journal(
                    replica.name, "filesync", "failed", "file sync did not reach the replica"
                )
                return
            if not replica.serving or not replica.installed or not primary.serving:
                self.journal(replica.name, "filesync", "failed", "replica unreachable")
                return
            for env, signature in snapshot.items():
                dest = replica.fs.host(f"/etc/puppetlabs/code/environments/{env}")
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(staged / env, dest, symlinks=True)
                pe.clients.setdefault(replica.name, {})[env] = dict(signature)
                self.journal(
                    replica.name, "filesync", "ok", f"{env} {signature['deploy-signature']}"
                )
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def config_version(self, server: VM, env: str) -> str:
        text = server.fs.read_text(f"/etc/puppetlabs/code/environments/{env}/.r10k-deploy.json")
        if text:
            try:
                sig = json.loads(text)["signature"]
                return f"{server.short}-{env}-{sig[:11]}"
            except (ValueError, KeyError):
                pass
        return str(int(time.time()))

    def all_secrets(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = [
            {"kind": "console-admin-password", "value": self.console_password},
            {"kind": "gitlab-root-password", "value": self.gitlab_password},
        ]
        if self.pe is not None:
            for t in self.pe.issued:
                out.append({"kind": "rbac-token", "value": t})
            for u in self.pe.users.values():
                if u.get("password") and u["login"] != "admin":
                    out.append({"kind": f"pe-user-password:{u['login']}", "value": u["password"]})
            for t in self.pe.reset_tokens:
                out.append({"kind": "rbac-reset-token", "value": t})
            for content in self.pe.primary_keys.values():
                out.append({"kind": "pe-secret-key-file", "value": content})
        for vm in self.vms.values():
            if vm.role in ("primary", "replica"):
                for path in KEY_FILES:
                    text = vm.fs.read_text(path)
                    if text:
                        out.append({"kind": "pe-secret-key-file", "value": text})
                if self.pe is not None:
                    keypath = self.pe.master_params().get("r10k_private_key")
                    text = vm.fs.read_text(keypath) if keypath else None
                    if text:
                        out.append({"kind": "r10k-private-key", "value": text})
        if self.gitlab is not None:
            for t in self.gitlab.pats:
                out.append({"kind": "gitlab-pat", "value": t})
            for t in self.gitlab.hook_tokens.values():
                out.append({"kind": "webhook-token", "value": t})
        for t in self.gitlab_secrets:
            out.append({"kind": "gitlab-pat", "value": t})
        seen: set[str] = set()
        uniq = []
        for s in out:
            if s["value"] and s["value"] not in seen:
                seen.add(s["value"])
                uniq.append(s)
        return uniq


def write_keys(state_dir: Path, hosts: list[dict[str, str]]) -> None:
    """Generate the CA, per-VM TLS certs, SSH host keys and the lab's vagrant key."""
    root = pki.make_ca(f"Puppet Root CA: labsim {state_dir.name}")
    ca_cert, ca_key = pki.make_ca(f"Puppet CA: labsim {state_dir.name}", issuer=root)
    (state_dir / "ca").mkdir(parents=True, exist_ok=True)
    (state_dir / "ca" / "ca.pem").write_bytes(ca_cert + root[0])
    pki.write_private(state_dir / "ca" / "ca_key.pem", ca_key)
    for h in hosts:
        kdir = state_dir / "vms" / h["name"] / "keys"
        kdir.mkdir(parents=True, exist_ok=True)
        cert, key = pki.make_server_cert(ca_cert, ca_key, h["name"], h["address"])
        (kdir / "cert.pem").write_bytes(cert)
        pki.write_private(kdir / "key.pem", key)
        algs = ["ssh-ed25519"] + (["ssh-rsa"] if h["role"] == "gitlab" else [])
        for alg in algs:
            k = (
                asyncssh.generate_private_key(alg, key_size=2048)
                if alg == "ssh-rsa"
                else asyncssh.generate_private_key(alg)
            )
            name = alg.split("-")[1]
            pki.write_private(kdir / f"ssh_host_{name}_key", k.export_private_key())
    lab = asyncssh.generate_private_key("ssh-ed25519", comment="vagrant")
    pki.write_private(state_dir / "insecure_private_key", lab.export_private_key())
    (state_dir / "insecure_private_key.pub").write_bytes(lab.export_public_key())
