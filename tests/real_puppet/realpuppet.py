"""A lab of real open-source Puppet (Debian 12's packages) on loopback addresses, for tests.

primary.vm (127.0.50.4) and replica.vm (127.0.50.41) are Debian's puppetserver, sharing the
primary's CA (the replica's CA service is disabled); linux.vm (127.0.50.6) is Debian's Puppet agent
with `server_list = primary.vm:8140,replica.vm:8140`, reached over a real OpenSSH server. The
project's own control-repo skeleton (pe_dr/control_repo) is deployed on both servers as Code Manager
lays it out (`.r10k-deploy.json` with the commit, `/opt/puppetlabs/puppet/bin/ruby`), so the
configuration version each catalog carries is produced by the project's own scripts. Each server
also runs its own PuppetDB (puppetdb_pair.py), fed by both servers' termini, and an OpenSSH
server, so the product reaches every VM as it reaches a lab VM.

The modules: tier.py (names, packages, golden capture, the system snapshot), processes.py,
probes.py (status probe, fault listeners), logins.py (SSH logins), build.py (the lab's files),
puppetdb_pair.py; this one starts, stops and arranges the lab.

Every process runs under `unshare --mount --uts` with its own hostname and bind mounts made inside
its private mount namespace: a private copy of /etc (the lab's /etc/hosts, the VM's
/etc/puppet, and the SSH login user in /etc/passwd, /etc/shadow, /etc/group and /etc/sudoers.d, so
that user exists only there), `/opt` (the ruby path), a private /run, and temporary directories
over every place under /var where Debian's Puppet writes (/var/lib/puppet, /var/cache/puppet,
/var/log/puppet, /var/lib/puppetserver, /var/log/puppetserver). /etc is a copied directory
rather than single bind-mounted files because Linux detaches a file's bind mount, in every
namespace, when the file is replaced by a rename: a `useradd` elsewhere on the machine would make
the login user vanish mid-run. Nothing of the real system is changed; `system_snapshot` is how the
tests prove it. Processes are stopped by PID (SIGTERM, then SIGKILL after a bounded wait), and
`close` kills whatever is left in the lab's namespaces and fails when anything survives.

Measured against the findings (../shared/reference/real-world-findings.md §3): each server is
ready 40-60 s after start with the JVM flags below; an agent run takes 3-7 s when warm.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import puppetdb_pair as pdb
from build import LabFiles, Server
from logins import listening, sshd_argv
from probes import Listener, simple_status
from processes import (
    Process,
    alive,
    kib,
    mnt_ns,
    namespaced,
    proc_status,
    pss_kib,
    wait_until,
)
from puppetdb_pair import PuppetDB
from tier import (
    ADDRESSES,
    CAPTURE_ENV,
    FIGURES,
    GOLDEN,
    JAVA_ARGS,
    PORT,
    ROLES,
    START_TIMEOUT,
    capture_golden,
    system_snapshot,
    tail,
    tier_marks,
    why_not_runnable,
)

from pe_dr.lab.spec import HostSpec, LabSpec

__all__ = [
    "CAPTURE_ENV",
    "FIGURES",
    "GOLDEN",
    "RealPuppetLab",
    "capture_golden",
    "system_snapshot",
    "tier_marks",
    "why_not_runnable",
]


class RealPuppetLab(LabFiles):
    """The lab's files, processes and faults. `build`, then `start`; `close` always."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary = Server("primary.vm", ADDRESSES["primary.vm"], root / "primary", True)
        self.replica = Server("replica.vm", ADDRESSES["replica.vm"], root / "replica", False)
        self.agent_root = root / "agent"
        self.vagrant_root = root / "vagrant"
        self.repo = root / "control-repo"
        self.opt = root / "opt"
        self.hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + "".join(
            f"{a} {n} {n.split('.')[0]}\n" for n, a in ADDRESSES.items()
        )
        self.sshd: Process | None = None
        self.ssh_port = 0
        self.postgres = contextlib.ExitStack()
        self.pg_data: Path | None = None
        self.peak_postgres_kib = 0
        for server in (self.primary, self.replica):
            server.puppetdb = PuppetDB(
                server.name,
                server.address,
                server.root / "puppetdb",
                f"pdb_{server.short}",
                server.ssldir,
            )
        self.processes: list[Process] = []
        self.namespaces: set[str] = set()
        self.commits: dict[str, str] = {}
        self.deployed: dict[str, str] = {}
        self.listener: Listener | None = None
        self.peak_total_kib = 0
        self.figures: dict[str, object] = {}
        self.system_before: dict[str, object] = {}
        self._sampler_stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.spec = LabSpec(
            name="real-puppet",
            pe_version="2025.8.0",
            vagrant_root=str(self.vagrant_root),
            hosts=[
                HostSpec(name=name, role=ROLES[name], address=address)
                for name, address in ADDRESSES.items()
            ],
        )

    # --- start and stop ----------------------------------------------------------------------

    def _track(self, process: Process) -> Process:
        self.processes.append(process)
        return process

    def _remember_namespace(self, process: Process) -> None:
        """The process's mount namespace, once unshare and sh have exec'd the real program."""

        def settled() -> str | None:
            if not process.running():
                raise AssertionError(f"{process.name} exited: {process.tail()}")
            try:
                exe = os.readlink(f"/proc/{process.pid}/exe")
            except OSError:
                return None
            if exe.endswith(("/unshare", "/sh", "/dash")):
                return None
            return mnt_ns(process.pid)

        ns = wait_until(f"{process.name} to start", settled, 30, every=0.05)
        process.mnt_ns = str(ns)
        self.namespaces.add(str(ns))

    def start_server(self, server: Server) -> None:
        r = server.root
        (r / "run" / "restart").write_text("0")
        argv = [
            "/usr/bin/java",
            *JAVA_ARGS,
            "-Djruby.lib=/usr/share/jruby/lib",
            "-XX:+CrashOnOutOfMemoryError",
            f"-XX:ErrorFile={r / 'log' / 'puppetserver_err_pid%p.log'}",
            "-jar",
            "/usr/share/puppetserver/puppetserver.jar",
            "--config",
            str(server.etc / "puppetserver" / "conf.d"),
            "--bootstrap-config",
            str(server.etc / "puppetserver" / "services.d"),
            "--restart-file",
            str(r / "run" / "restart"),
        ]
        server.process = self._track(
            Process(
                server.name,
                namespaced(server.short, self._server_binds(server), argv),
                r / "log" / "stdout.log",
            )
        )
        self._remember_namespace(server.process)

    def serving(self, server: Server) -> bool:
        ca = self.primary.ssldir / "certs" / "ca.pem"
        return simple_status(server.address, server.name, ca) == "running"

    def wait_serving(self, *servers: Server, timeout: float = START_TIMEOUT) -> None:
        """Bounded wait until each server says `running`; records how long each start took."""
        pending = list(servers)
        deadline = time.monotonic() + timeout
        while pending:
            for server in list(pending):
                assert server.process is not None
                if not server.process.running():
                    raise AssertionError(
                        f"{server.name}'s puppetserver exited with "
                        f"{server.process.popen.returncode}: {server.process.tail()}\n"
                        + tail(server.root / "log" / "puppetserver.log")
                    )
                if self.serving(server):
                    server.starts.append(round(time.monotonic() - server.process.started, 1))
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise AssertionError(
                    f"{names} not running within {timeout:g} s:\n"
                    + "\n".join(tail(s.root / "log" / "puppetserver.log") for s in pending)
                )
            if pending:
                time.sleep(0.5)

    def start_sshd(self) -> None:
        """The agent's sshd and each server's (the on-host reads reach the servers over SSH)."""
        sshds = [("linux.vm", self.agent_root / "ssh", self._agent_binds(), self.ssh_port)]
        sshds += [(s.name, s.root / "ssh", self._server_binds(s), s.ssh_port) for s in self.servers]
        for name, ssh, binds, port in sshds:
            process = self._track(
                Process(
                    f"{name} sshd",
                    namespaced(name.split(".")[0], binds, sshd_argv(ssh)),
                    ssh / "sshd.log",
                )
            )
            self._remember_namespace(process)
            if name == "linux.vm":
                self.sshd = process
            else:
                self.server(name).sshd = process
            wait_until(f"sshd on {name}", partial(listening, ADDRESSES[name], port), 15, 0.05)

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.primary, self.replica

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def start_puppetdb(self, server: Server) -> None:
        """`server`'s PuppetDB, in `server`'s namespace, from the compiled class cache."""
        classes = pdb.compiled_classes(self.root / "puppetdb-aot.log", self.figures)
        server.pdb.process = self._track(
            Process(
                f"{server.name} puppetdb",
                namespaced(server.short, self._server_binds(server), server.pdb.argv(classes)),
                server.pdb.root / "log" / "stdout.log",
            )
        )
        self._remember_namespace(server.pdb.process)

    def puppetdb_serving(self, server: Server) -> bool:
        answer = pdb.https_get(
            server.address, server.name, "/status/v1/simple", server.ssldir, server.name
        )
        return answer == (200, b"running")

    def wait_puppetdb(self, *servers: Server, timeout: float = pdb.START_TIMEOUT) -> None:
        """Bounded wait until each PuppetDB says `running`; records how long each start took."""
        pending = list(servers)
        deadline = time.monotonic() + timeout
        while pending:
            for server in list(pending):
                process = server.pdb.process
                assert process is not None
                if not process.running():
                    raise AssertionError(
                        f"{server.name}'s PuppetDB exited with {process.popen.returncode}: "
                        f"{process.tail()}\n{tail(server.pdb.log)}"
                    )
                if self.puppetdb_serving(server):
                    server.pdb.starts.append(round(time.monotonic() - process.started, 1))
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                raise AssertionError(
                    ", ".join(s.name for s in pending)
                    + f" PuppetDB not running within {timeout:g} s:\n"
                    + "\n".join(tail(s.pdb.log) for s in pending)
                )
            if pending:
                time.sleep(0.5)

    def start(self) -> None:
        """Both servers at once, the sshds, the PuppetDB class cache (built while the servers
        start, when missing), both PuppetDBs at once, then bounded waits for all four."""
        started = time.monotonic()
        for address, port, what in [
            (s.address, p, f"{s.name}'s {w}")
            for s in self.servers
            for p, w in ((PORT, "puppetserver"), (pdb.PORT, "PuppetDB"))
        ]:
            with contextlib.suppress(OSError), socket.create_connection((address, port), 1):
                # a test run killed before its teardown leaves its JVMs: say so, not BindException
                raise AssertionError(
                    f"something already listens on {address}:{port}, the tier's address for "
                    f"{what}: a JVM of an earlier, killed test run? "
                    "(`pkill -f pe-dr-real-puppet-` stops those)"
                )
        self.start_server(self.primary)
        self.start_server(self.replica)
        self.start_sshd()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()
        for server in self.servers:
            self.start_puppetdb(server)
        self.wait_puppetdb(*self.servers)
        self.figures["puppetdbs_ready_seconds"] = round(time.monotonic() - started, 1)
        self.wait_serving(self.primary, self.replica)
        self.figures["servers_ready_seconds"] = round(time.monotonic() - started, 1)

    def _lab_pids(self) -> list[int]:
        """Every live process in the lab's namespaces (servers, sshd, sessions, agent runs)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and mnt_ns(entry) in self.namespaces and alive(int(entry)):
                pids.append(int(entry))
        return pids

    def _sample(self) -> None:
        """Every 0.5 s: the summed RSS of all the lab's processes; keeps the peak."""
        while not self._sampler_stop.wait(0.5):
            total = 0
            for pid in self._lab_pids():
                total += kib(proc_status(pid).get("VmRSS"))
            postgres = sum(pss_kib(pid) for pid in self._postgres_pids())
            for process in self.processes:
                process.sample()
            self.peak_total_kib = max(self.peak_total_kib, total + postgres)
            self.peak_postgres_kib = max(self.peak_postgres_kib, postgres)

    def _postgres_pids(self) -> list[int]:
        """The cluster's postmaster and its children (it runs outside the lab's namespaces)."""
        if self.pg_data is None:
            return []
        try:
            main = int((self.pg_data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [main]
        for entry in os.listdir("/proc"):
            if entry.isdigit() and proc_status(int(entry)).get("PPid") == str(main):
                pids.append(int(entry))
        return pids

    def stop_primary(self) -> float:
        """The primary's puppetserver stopped (SIGTERM); the monotonic time it was gone."""
        assert self.primary.process is not None
        return self.primary.process.stop()

    def primary_outage(self, how: str = "stopped") -> float:
        """The primary down as a halted VM would be for the drill's reads: its puppetserver and
        its PuppetDB `stopped` (SIGTERM) or `paused` (SIGSTOP: TCP still accepted, nothing
        answered); the epoch time it was down."""
        self.arrange(primary=how, primary_puppetdb=how)
        return time.time()

    def close(self) -> None:
        """Stop everything the lab started, by PID; AssertionError if anything survives."""
        problems = []
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for process in reversed(self.processes):
            process.stop()
        self._sampler_stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
        for server in (self.primary, self.replica):
            server.peak_rss_kib = max(
                [p.peak_rss_kib for p in self.processes if p.name == server.name] or [0]
            )
            server.pdb.peak_rss_kib = max(
                [p.peak_rss_kib for p in self.processes if p.name == f"{server.name} puppetdb"]
                or [0]
            )
        leftovers = self._lab_pids()  # SSH sessions, agent runs: anything still in a namespace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while leftovers and time.monotonic() < deadline:
                leftovers = [pid for pid in leftovers if alive(pid)]
                time.sleep(0.1)
        if leftovers:
            problems.append(f"processes left in the lab's namespaces: {leftovers}")
        still = [f"{p.name} ({p.pid})" for p in self.processes if p.running()]
        if still:
            problems.append("processes still running: " + ", ".join(still))
        try:
            self.postgres.close()  # pg_ctl stop, its directory removed
        except Exception as exc:  # reported with the rest
            problems.append(f"the PostgreSQL cluster did not stop: {exc}")
        if problems:
            raise AssertionError("; ".join(problems))

    def log_tails(self, lines: int = 25) -> dict[str, str]:
        """The end of each server's log and of sshd's, for a failure report."""
        tails = {
            f"{s.name} puppetserver.log": tail(
                s.root / "log" / "puppetserver.log", lines, before="Shutting down due to JVM"
            )
            for s in (self.primary, self.replica)
        }
        for s in self.servers:
            tails[f"{s.name} puppetdb.log"] = tail(s.pdb.log, lines)
        tails["linux.vm sshd.log"] = tail(self.agent_root / "ssh" / "sshd.log", lines)
        return tails

    # --- the state a test needs --------------------------------------------------------------

    def arrange(
        self,
        *,
        primary: str = "serving",
        replica: str = "serving",
        primary_code: str = "current",
        replica_code: str = "current",
        connect_timeout: str | None = None,
        read_timeout: str | None = None,
        server_list: str = "primary.vm:8140,replica.vm:8140",
        primary_puppetdb: str = "serving",
        replica_puppetdb: str = "serving",
    ) -> None:
        """Put the lab in the state a test needs, from whatever state the last test left: servers
        `serving`, `paused` (SIGSTOP) or `stopped`; which commit each has deployed (`previous`,
        `current`, `failing-fact`); the agent's http_connect_timeout, http_read_timeout and
        server_list; each PuppetDB `serving`, `paused` or `stopped`. A stopped server or
        PuppetDB is started only when a test needs it (a start costs 20-60 s)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.agent_options(http_connect_timeout=connect_timeout, http_read_timeout=read_timeout)
        self.agent_main(server_list=server_list)
        for server, code in ((self.primary, primary_code), (self.replica, replica_code)):
            if self.deployed.get(server.name) != self.commits[code]:
                self.deploy(server, self.commits[code])
        for server, state in ((self.primary, primary), (self.replica, replica)):
            if state not in ("serving", "paused", "stopped"):
                raise ValueError(state)
            if server.paused() and state != "paused":
                assert server.process is not None
                server.process.resume()
            if state == "stopped" and server.running():
                assert server.process is not None
                server.process.stop()
            if state in ("serving", "paused") and not server.running():
                self.start_server(server)
                self.wait_serving(server)
            if state == "serving":
                wait_until(f"{server.name} serving", lambda s=server: self.serving(s), 60)
            if state == "paused" and not server.paused():
                assert server.process is not None
                server.process.pause()
        for server, state in ((self.primary, primary_puppetdb), (self.replica, replica_puppetdb)):
            if state not in ("serving", "paused", "stopped"):
                raise ValueError(state)
            db = server.pdb
            if db.paused() and state != "paused":
                assert db.process is not None
                db.process.resume()
            if state == "stopped" and db.running():
                assert db.process is not None
                db.process.stop()
            if state in ("serving", "paused") and not db.running():
                self.start_puppetdb(server)
                self.wait_puppetdb(server)
            if state == "serving":
                wait_until(
                    f"{server.name}'s PuppetDB", lambda s=server: self.puppetdb_serving(s), 60
                )
            if state == "paused" and not db.paused():
                assert db.process is not None
                db.process.pause()

    # --- faults ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def listening(self, kind: str) -> Iterator[Listener]:
        """A hung or 503 listener on primary.vm:8140 (the primary's puppetserver is stopped)."""
        assert not self.primary.running(), "stop the primary's puppetserver first"
        self.listener = Listener(kind, self.primary.address, self.primary.cert, self.primary.key)
        try:
            yield self.listener
        finally:
            self.listener.close()
            self.listener = None
