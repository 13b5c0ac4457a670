"""The Vagrant CLI the lab answers (`vagrant up`, `halt`, `destroy`, `status`, `ssh-config`,
`snapshot`, `box`), as Vagrant 2.4 prints it, and the provisioning the project's Vagrantfile
runs (labsim/provision.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from labsim.provision import Provision

if TYPE_CHECKING:
    from labsim.lab import VM
    from labsim.replication import Replication

Emit = Callable[[str, str], None]


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


def _ts() -> str:
    return str(int(time.time()))


def _already_provisioned(vm: str) -> str:
    """What `vagrant up` says of a VM it did not create this time."""
    return (
        f"==> {vm}: Machine already provisioned. Run `vagrant provision` or use the `--provision`\n"
        f"==> {vm}: flag to force provisioning. Provisioners marked to run always will still run.\n"
    )


class VagrantCLI(Provision):
    replication: Replication
    boxes: set[str]
    box_importing: bool
    hostonly_ready: bool
    hostonly_creating: bool
    console_password: str
    gitlab_password: str

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
