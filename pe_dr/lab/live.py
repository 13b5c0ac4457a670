"""Lab: live handles on one lab (vagrant, SSH hosts, PE and GitLab clients) built from a LabSpec.

A Lab lives inside one task and is closed at its end; tasks pass the LabSpec, never a Lab. The SSH
connections outlive it: the Labs of one process share one Host (one connection) per VM.
"""

from __future__ import annotations

import atexit
import errno
import socket
import ssl
import threading
from collections.abc import Sequence
from types import TracebackType

from pe_dr.clients.gitlab_api import GitLabClient
from pe_dr.clients.http import lab_ssl_context
from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import PeDrError, TransientError
from pe_dr.lab import paths
from pe_dr.lab.host import Host
from pe_dr.lab.installation import Installation
from pe_dr.lab.on_host import HostCurlTransport
from pe_dr.lab.spec import LabSpec
from pe_dr.lab.vagrant import VagrantLab
from pe_dr.parsing.vagrant import SSHParams
from pe_dr.secrets import remember

# (vagrant root, VM) -> its `vagrant ssh-config` settings, shared by the Labs of this process: every
# task opens its own Lab, and a real vagrant takes a second or two to start. Forgotten when a Lab
# starts, halts or destroys the VM (forget_host) and when connecting with them fails.
_ssh_params: dict[tuple[str, str], SSHParams] = {}
_ssh_params_lock = threading.Lock()
# (vagrant root, VM) -> its Host, with its SSH connection, shared by the Labs of this process in
# the same way: a connection costs a TCP and an SSH handshake (key exchange, authentication), and
# the drill's steps each opened one per VM they touched. Dropped with the settings above; a Lab's
# close() leaves them open for the next step (close_connections() closes them all).
_pooled: dict[tuple[str, str], Host] = {}


def _forget_params(key: tuple[str, str], stale: SSHParams | None = None) -> None:
    with _ssh_params_lock:
        if stale is None or _ssh_params.get(key) == stale:
            _ssh_params.pop(key, None)
        host = _pooled.get(key)
        if host is not None and (stale is None or host.ssh == stale):
            del _pooled[key]
        else:
            host = None
    if host is not None:
        host.close()


def close_connections(wait: float = -1) -> None:
    """Close the SSH connections the Labs of this process keep (they reconnect when used); with
    `wait`, skip one another thread holds longer than that (Host.close)."""
    with _ssh_params_lock:
        hosts = list(_pooled.values())
        _pooled.clear()
    for host in hosts:
        host.close(wait)


class Lab:
    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        # an installation's hosts stand: never built, halted or destroyed (pe_dr.lab.installation)
        self.vagrant: VagrantLab | Installation = (
            Installation(spec) if spec.installation else VagrantLab(spec.vagrant_root, spec=spec)
        )
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
        """Let go of the VMs' handles; their SSH connections stay open for the next Lab of this
        process (forget_host, a failed connection or close_connections() close them)."""
        with self._lock:
            self._hosts = {}

    def host(self, name: str) -> Host:
        """An SSH handle on VM `name`, with parameters from `vagrant ssh-config`."""
        vm = self.spec.host(name).name
        with self._lock:
            cached = self._hosts.get(vm)
        if cached is not None:
            return cached
        key = (self.vagrant.root, vm)
        with _ssh_params_lock:
            params = _ssh_params.get(key)
        if params is None:
            params = self.vagrant.ssh_params(vm)
            with _ssh_params_lock:
                _ssh_params[key] = params
        host = self._new_host(vm, params)
        with self._lock:
            return self._hosts.setdefault(vm, host)

    def _new_host(self, vm: str, params: SSHParams) -> Host:
        """The process's Host for `vm` with these settings (a new one when they changed)."""
        key = (self.vagrant.root, vm)
        stale = None
        with _ssh_params_lock:
            host = _pooled.get(key)
            if host is None or host.ssh != params:
                stale = host
                host = Host(vm, params, on_unreachable=lambda: _forget_params(key, params))
                if not _pooled:  # the first kept connection: a clean disconnect at exit
                    atexit.unregister(close_connections)
                    atexit.register(close_connections, 1.0)
                _pooled[key] = host
        if stale is not None:
            stale.close()
        return host

    def prefetch_hosts(self, names: Sequence[str]) -> None:
        """Build the SSH handles of many VMs from one `vagrant ssh-config` (a fan-out over agents).
        Best effort: a VM it could not resolve is looked up alone, with its own error, by host()."""
        vms = [self.spec.host(n).name for n in names]
        with self._lock:
            missing = [vm for vm in vms if vm not in self._hosts]
        with _ssh_params_lock:
            known = {
                vm: _ssh_params[(self.vagrant.root, vm)]
                for vm in missing
                if (self.vagrant.root, vm) in _ssh_params
            }
        unknown = [vm for vm in missing if vm not in known]
        if len(unknown) > 1:
            try:
                fetched = self.vagrant.ssh_params_many(unknown)
            except PeDrError:
                fetched = {}
            with _ssh_params_lock:
                _ssh_params.update({(self.vagrant.root, vm): p for vm, p in fetched.items()})
            known.update(fetched)
        with self._lock:
            for vm, params in known.items():
                self._hosts.setdefault(vm, self._new_host(vm, params))

    def forget_host(self, name: str) -> None:
        """Drop the SSH handle of a VM that was halted or destroyed."""
        vm = self.spec.host(name).name
        _forget_params((self.vagrant.root, vm))
        with self._lock:
            host = self._hosts.pop(vm, None)
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

    def pe_on(self, server: str) -> PEClient:
        """A PE API client that calls `server`'s APIs on `server` itself, over SSH, with its host
        certificate (pe_dr.lab.on_host): what reads the replica while the primary is down."""
        name = self.spec.host(server).name
        transport = HostCurlTransport(self.host(name), self.spec.host(name).address)
        return PEClient(name, host_map=self.spec.address_map, ca_pem=None, transport=transport)

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

    def probe_puppetserver(self, name: str, *, port: int = 8140, timeout: float = 3.0) -> str:
        """How Puppet Server on VM `name` looks from here, as an agent would meet it: `answering`
        (an HTTP answer to /status/v1/simple/server), or down as `refused`, `unreachable` (no
        route, or no answer to the TCP connection), `hung` (accepts TCP, never completes TLS) or
        `silent` (TLS, then no HTTP answer). TLS is verified against the lab CA, read from the
        replica when `name` is the primary (the primary may be the one that is down)."""
        address = self.spec.host(name).address
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "unreachable"
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return "unreachable"
            return "refused" if exc.errno == errno.ECONNREFUSED else "unreachable"
        ca_from = self.spec.replica.name if name == self.spec.primary.name else name
        context = lab_ssl_context(self.ca_pem(ca_from))
        with sock:
            sock.settimeout(timeout)
            try:
                tls = context.wrap_socket(sock, server_hostname=self.spec.host(name).name)
            except TimeoutError:
                return "hung"
            except ssl.SSLCertVerificationError:
                return "answering"  # something serves TLS there, with the wrong certificate
            except (ssl.SSLError, OSError):
                return "refused"  # reset during the handshake: nothing serves there
            with tls:
                try:
                    tls.sendall(
                        b"GET /status/v1/simple/server HTTP/1.1\r\nHost: "
                        + self.spec.host(name).name.encode()
                        + b"\r\nConnection: close\r\n\r\n"
                    )
                    first = tls.recv(64)
                except TimeoutError:
                    return "silent"
                except OSError:
                    return "refused"
        return "answering" if first.startswith(b"HTTP/") else "silent"

    def require_running(self, *names: str) -> None:
        states = self.vagrant.status()
        for name in names:
            vm = self.spec.host(name).name
            if states.get(vm) != "running":
                raise TransientError(f"{vm} is {states.get(vm, 'unknown')}, not running")
