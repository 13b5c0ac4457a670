"""Lab: live handles on one lab (vagrant, SSH hosts, PE and GitLab clients) built from a LabSpec.

A Lab lives inside one task and is closed at its end; tasks pass the LabSpec, never a Lab.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from pe_dr import paths
from pe_dr.errors import TransientError
from pe_dr.gitlab_api import GitLabClient
from pe_dr.host import Host
from pe_dr.pe_api import PEClient
from pe_dr.secrets import remember
from pe_dr.spec import LabSpec
from pe_dr.vagrant import VagrantLab


class Lab:
    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        self.vagrant = VagrantLab(spec.vagrant_root)
        self._hosts: dict[str, Host] = {}
        self._ca: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.close()

    def host(self, name: str) -> Host:
        """An SSH handle on VM `name`, with parameters from `vagrant ssh-config`."""
        vm = self.spec.host(name).name
        with self._lock:
            cached = self._hosts.get(vm)
        if cached is not None:
            return cached
        host = Host(vm, self.vagrant.ssh_params(vm))
        with self._lock:
            return self._hosts.setdefault(vm, host)

    def forget_host(self, name: str) -> None:
        """Drop the SSH handle of a VM that was halted or destroyed."""
        with self._lock:
            host = self._hosts.pop(self.spec.host(name).name, None)
        if host is not None:
            host.close()

    def ca_pem(self, server: str | None = None) -> bytes:
        """The lab CA certificate, read from a PE server (the primary unless told otherwise)."""
        server = server or self.spec.primary.name
        if server not in self._ca:
            self._ca[server] = self.host(server).read(paths.CA_CERT)
        return self._ca[server]

    def token(self, server: str, token_file: str) -> str:
        """An RBAC token stored in a token file on a PE server."""
        return remember(self.host(server).read(token_file, root=True).decode().strip())

    def pe(self, server: str | None = None, token_file: str | None = paths.ADMIN_TOKEN) -> PEClient:
        """A PE API client for `server`, authenticated with the token in `token_file` there."""
        server = server or self.spec.primary.name
        token = self.token(server, token_file) if token_file else None
        return PEClient(
            server, host_map=self.spec.address_map, ca_pem=self.ca_pem(server), token=token
        )

    def gitlab_token(self) -> str | None:
        host = self.host(self.spec.gitlab.name)
        if not host.exists(paths.GITLAB_API_TOKEN, root=True):
            return None
        return remember(host.read(paths.GITLAB_API_TOKEN, root=True).decode().strip())

    def gitlab(self, token: str | None = None) -> GitLabClient:
        return GitLabClient(
            self.spec.gitlab_url,
            host_map=self.spec.address_map,
            token=token if token is not None else self.gitlab_token(),
        )

    def accepts_tcp(self, name: str, port: int, timeout: float = 3.0) -> bool:
        """True when VM `name` accepts a TCP connection on `port` (a halted VM refuses)."""
        address = self.spec.host(name).address
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:
            return False

    def require_running(self, *names: str) -> None:
        states = self.vagrant.status()
        for name in names:
            vm = self.spec.host(name).name
            if states.get(vm) != "running":
                raise TransientError(f"{vm} is {states.get(vm, 'unknown')}, not running")
