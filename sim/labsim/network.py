"""The lab's network: which VM a host name is, the listeners each VM's state calls for (PE's
ports, GitLab's, SSH, the silent ones of a hung VM), and faults taking effect on them."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any

from labsim.clock import DURATIONS
from labsim.faults import LabFaults
from labsim.http import HTTPServer

if TYPE_CHECKING:
    from labsim.lab import VM
    from labsim.puppetdb import PuppetDBs
    from labsim.state import PEState


class Network(LabFaults):
    vms: dict[str, VM]
    pe: PEState | None
    gitlab_port: int
    puppetdb: PuppetDBs
    ca_pem: bytes
    api: Any  # labsim.api and labsim.sshd, set by the daemon (an import cycle otherwise)
    sshd: Any

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
        self.puppetdb.tick(self.lab)
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
