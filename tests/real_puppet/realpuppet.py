"""A lab of real open-source Puppet (Debian 12's packages) on loopback addresses, for tests.

primary.vm (127.0.50.4) and replica.vm (127.0.50.41) are Debian's puppetserver, sharing the
primary's CA (the replica's CA service is disabled); linux.vm (127.0.50.6) is Debian's Puppet agent
with `server_list = primary.vm:8140,replica.vm:8140`, reached over a real OpenSSH server. The
project's own control-repo skeleton (pe_dr/control_repo) is deployed on both servers as Code Manager
lays it out (`.r10k-deploy.json` with the commit, `/opt/puppetlabs/puppet/bin/ruby`), so the
configuration version each catalog carries is produced by the project's own scripts.

Every process runs under `unshare --mount --uts` with its own hostname and bind mounts made inside
its private mount namespace: a private copy of /etc (the lab's /etc/hosts; for the agent also its
/etc/puppet, and the SSH login user in /etc/passwd, /etc/shadow, /etc/group and /etc/sudoers.d, so
that user exists only there), `/opt` (the ruby path), and temporary directories over every place
under /var where Debian's Puppet writes (/var/lib/puppet, /var/cache/puppet, /var/log/puppet,
/var/lib/puppetserver, /var/log/puppetserver; /run for the agent). /etc is a copied directory
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
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import puppetdb_pair as pdb
from logins import add_login, build_sshd, listening, ssh_config, sshd_argv
from processes import Process, alive, kib, mnt_ns, namespaced, proc_status, wait_until
from puppetdb_pair import PuppetDB

from labsim.testing import postgres_cluster
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import HostSpec, LabSpec, Role

REPO = Path(__file__).resolve().parents[2]
CAPTURE_ENV = "PE_DR_CAPTURE_GOLDEN"

# what the tier measured (tests add to it), printed in the closing summary
FIGURES: dict[str, object] = {}
GOLDEN = REPO / "tests" / "golden"

ADDRESSES = {
    "primary.vm": "127.0.50.4",
    "replica.vm": "127.0.50.41",
    "linux.vm": "127.0.50.6",
    "gitlab.vm": "127.0.50.7",
}
ROLES = {
    "primary.vm": Role.PRIMARY,
    "replica.vm": Role.REPLICA,
    "linux.vm": Role.AGENT,
    "gitlab.vm": Role.GITLAB,
}
PORT = 8140
ENVIRONMENT = "production"
START_TIMEOUT = 240.0  # seconds for a puppetserver to say `running` (measured: 40-60 s, 2 cores)

# Debian's puppetserver.service: ExecStart with JAVA_ARGS from /etc/default/puppetserver, where
# -Xms1g -Xmx1g became 512m and the two JIT/GC flags were added (findings §3: ready in 36-59 s
# instead of 63-126 s, RSS about 600 MiB).
JAVA_ARGS = (
    "-Xms512m",
    "-Xmx512m",
    "-Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
)
DEBIAN_CONF = Path("/etc/puppet/puppetserver")

# (file the tier needs, the Debian package that ships it)
REQUIREMENTS = (
    ("/usr/bin/puppet", "puppet-agent"),
    ("/usr/bin/puppetserver", "puppetserver"),
    ("/usr/share/puppetserver/puppetserver.jar", "puppetserver"),
    ("/usr/bin/java", "puppetserver"),
    ("/usr/bin/ruby", "ruby"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("/usr/bin/ssh-keygen", "openssh-client"),
    ("/usr/bin/sudo", "sudo"),
    ("/usr/bin/git", "git"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/bin/curl", "curl"),
    *pdb.REQUIREMENTS,
)

# Debian's Puppet writes here by default; inside the lab's namespaces each is a temp directory
# (and /etc is a private copy).
SHADOWED = (
    "/var/lib/puppet",
    "/var/cache/puppet",
    "/var/log/puppet",
    "/var/lib/puppetserver",
    "/var/log/puppetserver",
)

# Fixed author and dates: the control repo's commits have the same shas in every run, so golden
# files captured in one run match the next.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "pe-dr-drill",
    "GIT_AUTHOR_EMAIL": "pe-dr-drill@example.invalid",
    "GIT_COMMITTER_NAME": "pe-dr-drill",
    "GIT_COMMITTER_EMAIL": "pe-dr-drill@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}
MARKER = "# pe-dr-drill replication marker real-puppet"
FAILING_FACT = """\
# A custom fact that fails on every run (pluginsync ships it to agents): Facter prints an Error:
# line, the run goes on and applies its catalog.
Facter.add(:pedr_failing_fact) do
  setcode do
    raise 'pe-dr-drill: this custom fact fails on purpose'
  end
end
"""


def why_not_runnable() -> str | None:
    """Why this machine cannot run the tier (missing package, not root), or None."""
    missing = sorted({pkg for path, pkg in REQUIREMENTS if not os.path.exists(path)})
    if missing:
        return (
            "needs the Debian packages " + " ".join(missing) + " (scripts/install-test-packages.sh)"
        )
    if os.geteuid() != 0:
        return "needs root (private mount namespaces, an sshd, bind mounts)"
    probe = subprocess.run(
        ["unshare", "--mount", "--uts", "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"`unshare --mount --uts` is not permitted here: {probe.stderr.strip()}"
    return None


def versions() -> str:
    """The installed versions, e.g. `puppet-agent 7.23.0 and puppetserver 7.9.5 from Debian 12`."""

    def upstream(pkg: str) -> str:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=30
        ).stdout
        return out.split("-", 1)[0].split(":")[-1] or "unknown"

    release = "Debian"
    with contextlib.suppress(OSError):
        release += " " + Path("/etc/debian_version").read_text().split(".")[0].strip()
    return (
        f"puppet-agent {upstream('puppet-agent')} and puppetserver {upstream('puppetserver')} "
        + (f"from {release}")
    )


# --- TLS and HTTP probes ---------------------------------------------------------------------


def simple_status(address: str, name: str, ca_file: Path, timeout: float = 3.0) -> str | None:
    """GET /status/v1/simple on address:8140, TLS verified against the lab CA as `name`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((address, PORT), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=name) as tls,
        ):
            tls.sendall(
                f"GET /status/v1/simple HTTP/1.1\r\nHost: {name}:{PORT}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while len(data) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode(errors="replace").strip()


class Listener:
    """Something on primary.vm:8140 that is not Puppet Server: `hung` accepts TCP connections and
    never sends a byte (as a host whose server process froze); `silent` completes TLS with the
    primary's own certificate, reads the request and never answers it; `503` completes TLS and
    answers every request 503 Service Unavailable."""

    def __init__(self, kind: str, address: str, cert: Path, key: Path) -> None:
        if kind not in ("hung", "silent", "503"):
            raise ValueError(kind)
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, PORT))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.held: list[socket.socket] = []
        self.requests = 0
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name=f"listener-{kind}", daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.kind == "hung":
                self.held.append(conn)  # never answered, closed when the listener stops
                continue
            worker = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _answer(self, conn: socket.socket) -> None:
        body = b"Service Unavailable: pe-dr-drill test listener\n"
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            conn.settimeout(10)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                if self.kind == "silent":
                    # hold the connection, answer nothing, until the client gives up or we stop
                    while not self._stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            tls.settimeout(0.2)
                            if not tls.recv(4096):
                                return
                    return
                tls.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + b"Connection: close\r\n\r\n"
                    + body
                )

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accept.join(5)
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        for worker in self._threads:
            worker.join(12)


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    address: str
    root: Path
    is_ca: bool
    process: Process | None = None
    starts: list[float] = field(default_factory=list)  # seconds from start to `running`
    peak_rss_kib: int = 0
    puppetdb: PuppetDB | None = None
    sshd: Process | None = None
    ssh_port: int = 0

    @property
    def short(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def ssldir(self) -> Path:
        return self.root / "ssl"

    @property
    def pdb(self) -> PuppetDB:
        assert self.puppetdb is not None
        return self.puppetdb

    @property
    def environment(self) -> Path:
        return self.root / "code" / "environments" / ENVIRONMENT

    @property
    def cert(self) -> Path:
        return self.ssldir / "certs" / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.ssldir / "private_keys" / f"{self.name}.pem"

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def paused(self) -> bool:
        return self.process is not None and self.process.paused and self.process.running()


class RealPuppetLab:
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

    # --- build -----------------------------------------------------------------------------

    def build(self) -> None:
        for path in (self.root, self.opt / "puppetlabs" / "puppet" / "bin"):
            path.mkdir(parents=True, exist_ok=True)
        # PE's ruby, as the control repo's config_version.sh looks for it
        (self.opt / "puppetlabs" / "puppet" / "bin" / "ruby").symlink_to("/usr/bin/ruby")
        for server in (self.primary, self.replica):
            self._private_etc(server.root / "etc-root")
        self._build_control_repo()
        self._build_pki()
        self._build_agent()
        cluster = self.postgres.enter_context(postgres_cluster())
        for server in (self.primary, self.replica):
            self._build_server(server)
            self.deploy(server, self.commits["current"])
            cluster._createdb(server.pdb.database)
            server.pdb.build(cluster.port, [self.primary.name, self.replica.name])
        self._build_vagrant()

    def _git(self, *args: str) -> str:
        env = {
            **os.environ,
            **GIT_ENV,
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        out = subprocess.run(
            ["git", "-C", str(self.repo), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    def _build_control_repo(self) -> None:
        """Three real commits: the project's skeleton ('previous'), the skeleton with a
        replication marker as the drill commits it ('current'), and 'current' plus a module whose
        custom fact fails ('failing-fact')."""
        self.repo.mkdir()
        self._git("init", "-q", "-b", ENVIRONMENT)
        skeleton = resources.files("pe_dr") / "control_repo"

        def copy(node: Traversable, target: Path) -> None:
            for child in node.iterdir():
                if child.is_dir():
                    (target / child.name).mkdir(exist_ok=True)
                    copy(child, target / child.name)
                else:
                    (target / child.name).write_bytes(child.read_bytes())
                    (target / child.name).chmod(0o755 if child.name.endswith(".sh") else 0o644)

        copy(skeleton, self.repo)
        self._git("add", "-A")
        self._git("commit", "-q", "-m", "Control repo for the DR drill")
        self.commits["previous"] = self._git("rev-parse", "HEAD")
        puppetfile = self.repo / "Puppetfile"
        puppetfile.write_text(puppetfile.read_text().rstrip("\n") + f"\n{MARKER}\n")
        self._git("commit", "-q", "-am", f"pe-dr-drill: {MARKER.lstrip('# ')}")
        self.commits["current"] = self._git("rev-parse", "HEAD")
        fact = self.repo / "site-modules" / "pedr_fault" / "lib" / "facter" / "pedr_failing.rb"
        fact.parent.mkdir(parents=True)
        fact.write_text(FAILING_FACT)
        self._git("add", "-A")
        self._git("commit", "-q", "-m", "A custom fact that fails")
        self.commits["failing-fact"] = self._git("rev-parse", "HEAD")

    def deploy(self, server: Server, commit: str) -> None:
        """Deploy `commit` as Code Manager does: the commit's files in the environment, and
        .r10k-deploy.json naming it; swapped in whole, so no compile sees half a deployment."""
        env = server.environment
        env.parent.mkdir(parents=True, exist_ok=True)
        staging = env.parent / f".{ENVIRONMENT}.new"
        old = env.parent / f".{ENVIRONMENT}.old"
        for path in (staging, old):
            shutil.rmtree(path, ignore_errors=True)
        staging.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(self.repo), "archive", commit],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True, timeout=60)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        (staging / ".r10k-deploy.json").write_text(
            json.dumps(
                {
                    "name": ENVIRONMENT,
                    "signature": commit,
                    "started_at": now,
                    "finished_at": now,
                    "deploy_success": True,
                },
                indent=2,
            )
            + "\n"
        )
        if env.exists():
            env.rename(old)
        staging.rename(env)
        shutil.rmtree(old, ignore_errors=True)
        self.deployed[server.name] = commit

    def _puppet_conf(self, server: Server) -> str:
        r = server.root
        lines = [
            "[main]",
            f"certname = {server.name}",
            f"server = {self.primary.name}",
            f"ssldir = {server.ssldir}",
            f"vardir = {r / 'cache'}",
            f"logdir = {r / 'log'}",
            f"rundir = {r / 'run'}",
            f"codedir = {r / 'code'}",
            "keylength = 2048",  # findings §3: keeps CA set-up at 4 s
            "",
            "[server]",
        ]
        lines += pdb.SERVER_SETTINGS
        if server.is_ca:
            lines.append(f"cadir = {r / 'ca'}")
        return "\n".join(lines) + "\n"

    def _build_pki(self) -> None:
        """The primary is the CA (`puppetserver ca setup`); the replica's and the agent's
        certificates are signed by it offline, before any server runs."""
        primary = self.primary
        primary.etc.mkdir(parents=True)
        (primary.etc / "puppet.conf").write_text(self._puppet_conf(primary))
        conf = str(primary.etc / "puppet.conf")
        log = self.root / "ca.log"
        for args in (
            ["setup", "--config", conf],
            # --ca-client signs offline (the CA service is not running yet); --force because the
            # CLI cannot reach a server to ask whether one runs. Such certificates carry the
            # pp_cli_auth extension, as the CA server's own does.
            ["generate", "--ca-client", "--force", "--certname", "replica.vm,linux.vm"],
        ):
            if args[0] == "generate":
                args += ["--config", conf]
            with log.open("ab") as fh:
                subprocess.run(
                    namespaced(
                        "primary", self._server_binds(primary), ["puppetserver", "ca", *args]
                    ),
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=120,
                )

    def _copy_pki(self, certname: str, ssldir: Path) -> None:
        source = self.primary.ssldir
        for sub in ("certs", "private_keys", "public_keys"):
            (ssldir / sub).mkdir(parents=True, exist_ok=True)
        (ssldir / "private_keys").chmod(0o750)
        shutil.copy(source / "certs" / "ca.pem", ssldir / "certs" / "ca.pem")
        shutil.copy(source / "crl.pem", ssldir / "crl.pem")
        for sub in ("certs", "private_keys", "public_keys"):
            shutil.copy(source / sub / f"{certname}.pem", ssldir / sub / f"{certname}.pem")
        (ssldir / "private_keys" / f"{certname}.pem").chmod(0o640)

    def _private_etc(self, dest: Path) -> Path:
        """A copy of /etc for one namespace, with the lab's /etc/hosts."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "/etc", str(dest)], check=True, timeout=120)
        (dest / "hosts").write_text(self.hosts)
        return dest

    def _server_binds(self, server: Server) -> list[tuple[Path, str]]:
        shadow = server.root / "shadowed"
        (server.root / "runroot").mkdir(parents=True, exist_ok=True)
        binds: list[tuple[Path, str]] = [
            (server.root / "etc-root", "/etc"),
            (self.opt, "/opt"),
            (server.root / "runroot", "/run"),  # sshd's /run/sshd
        ]
        for target in SHADOWED:
            if os.path.isdir(target):
                source = shadow / target.strip("/").replace("/", "-")
                source.mkdir(parents=True, exist_ok=True)
                binds.append((source, target))
        return binds

    def _build_server(self, server: Server) -> None:
        r = server.root
        for sub in (
            "etc/puppetserver/conf.d",
            "etc/puppetserver/services.d",
            "code/environments",
            "cache",
            "log",
            "run",
            "var",
            "jruby-gems",
        ):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (server.etc / "puppet.conf").write_text(self._puppet_conf(server))
        # `puppet config print` as root in the VM reads /etc/puppet (the on-host reads' files)
        (server.root / "etc-root" / "puppet" / "puppet.conf").write_text(self._puppet_conf(server))
        shutil.copy("/etc/puppet/hiera.yaml", server.etc / "hiera.yaml")
        other = self.replica if server is self.primary else self.primary
        pdb.terminus_files(server.etc, server.name, other.name)
        add_login(server.root / "etc-root", server.root / "home")
        (server.root / "runroot" / "sshd").mkdir(parents=True)
        (server.root / "runroot" / "sshd").chmod(0o755)
        server.ssh_port = build_sshd(
            server.root / "ssh", server.address, self.agent_root / "ssh" / "id"
        )
        if not server.is_ca:
            self._copy_pki(server.name, server.ssldir)
        conf_d = server.etc / "puppetserver" / "conf.d"
        for name in ("auth.conf", "ca.conf", "metrics.conf", "web-routes.conf"):
            shutil.copy(DEBIAN_CONF / "conf.d" / name, conf_d / name)
        (conf_d / "global.conf").write_text(
            f"global: {{\n    logging-config: {server.etc / 'puppetserver' / 'logback.xml'}\n}}\n"
        )
        (conf_d / "webserver.conf").write_text(
            "webserver: {\n"
            f"    access-log-config: {server.etc / 'puppetserver' / 'request-logging.xml'}\n"
            "    client-auth: want\n"
            f"    ssl-host: {server.address}\n"
            f"    ssl-port: {PORT}\n"
            "}\n"
        )
        (conf_d / "puppetserver.conf").write_text(
            "jruby-puppet: {\n"
            "    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]\n"
            f"    gem-home: {r / 'jruby-gems'}\n"
            "    gem-path: [${jruby-puppet.gem-home}, "
            '"/usr/lib/puppetserver/vendored-jruby-gems"]\n'
            f"    server-conf-dir: {server.etc}\n"
            f"    server-code-dir: {r / 'code'}\n"
            f"    server-var-dir: {r / 'var'}\n"
            f"    server-run-dir: {r / 'run'}\n"
            f"    server-log-dir: {r / 'log'}\n"
            "    max-active-instances: 1\n"
            "}\n"
            "http-client: {\n}\n"
            "profiler: {\n}\n"
            "product: {\n    check-for-updates: false\n}\n"
        )
        services = server.etc / "puppetserver" / "services.d"
        shutil.copy(DEBIAN_CONF / "services.d" / "bootstrap.cfg", services / "bootstrap.cfg")
        if server.is_ca:
            shutil.copy(DEBIAN_CONF / "services.d" / "ca.cfg", services / "ca.cfg")
        else:
            (services / "ca.cfg").write_text(
                "# The replica is not a CA: agents' certificates come from the primary.\n"
                "puppetlabs.services.ca.certificate-authority-disabled-service/"
                "certificate-authority-disabled-service\n"
                "puppetlabs.trapperkeeper.services.watcher.filesystem-watch-service/"
                "filesystem-watch-service\n"
            )
        pattern = "%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%t] [%c{2}] %m%n"
        (server.etc / "puppetserver" / "logback.xml").write_text(
            "<configuration>\n"
            '  <appender name="F1" class="ch.qos.logback.core.FileAppender">\n'
            f"    <file>{r / 'log' / 'puppetserver.log'}</file>\n"
            f"    <encoder><pattern>{pattern}</pattern></encoder>\n"
            "  </appender>\n"
            '  <logger name="org.eclipse.jetty" level="INFO"/>\n'
            '  <root level="info"><appender-ref ref="F1"/></root>\n'
            "</configuration>\n"
        )
        (server.etc / "puppetserver" / "request-logging.xml").write_text(
            "<configuration>\n"
            '  <appender name="FILE" class="ch.qos.logback.core.FileAppender">\n'
            f"    <file>{r / 'log' / 'puppetserver-access.log'}</file>\n"
            '    <encoder><pattern>%h %l %u [%t] "%r" %s %b %D</pattern></encoder>\n'
            "  </appender>\n"
            '  <appender-ref ref="FILE" />\n'
            "</configuration>\n"
        )

    # --- the agent and its SSH server --------------------------------------------------------

    @property
    def agent_etc(self) -> Path:
        """The agent's /etc (a private copy; /etc/puppet in it is the agent's confdir)."""
        return self.agent_root / "etc-root"

    @property
    def agent_conf(self) -> Path:
        return self.agent_etc / "puppet" / "puppet.conf"

    def _agent_binds(self) -> list[tuple[Path, str]]:
        a = self.agent_root
        return [
            (self.agent_etc, "/etc"),
            (a / "lib", "/var/lib/puppet"),
            (a / "cache", "/var/cache/puppet"),
            (a / "log", "/var/log/puppet"),
            (a / "runroot", "/run"),
        ]

    def agent_options(self, **options: str | None) -> None:
        """Set (or, with None, remove) options of the agent's puppet.conf [agent] section."""
        text = self.agent_conf.read_text()
        head, _, agent = text.partition("[agent]\n")
        kept = [line for line in agent.splitlines() if line.split("=", 1)[0].strip() not in options]
        kept += [f"{k} = {v}" for k, v in options.items() if v is not None]
        new = self.agent_conf.with_suffix(".new")
        new.write_text(head + "[agent]\n" + "".join(f"{line}\n" for line in kept))
        new.rename(self.agent_conf)

    def agent_main(self, **options: str) -> None:
        """Set options of the agent's puppet.conf [main] section (server_list lives there)."""
        text = self.agent_conf.read_text()
        main, sep, rest = text.partition("[agent]\n")
        lines = [line for line in main.splitlines() if line.split("=", 1)[0].strip() not in options]
        lines += [f"{k} = {v}" for k, v in options.items()]
        new = self.agent_conf.with_suffix(".new")
        new.write_text("\n".join(lines) + "\n" + sep + rest)
        new.rename(self.agent_conf)

    def _build_agent(self) -> None:
        a = self.agent_root
        for sub in ("lib", "cache", "log", "run", "ssh", "home", "runroot/sshd"):
            (a / sub).mkdir(parents=True, exist_ok=True)
        etc = self._private_etc(self.agent_etc)
        shutil.rmtree(etc / "puppet")  # Debian's, server configuration included: the agent's own
        (etc / "puppet").mkdir()
        (a / "runroot" / "sshd").chmod(0o755)
        (a / "lib").chmod(0o750)
        self._copy_pki("linux.vm", a / "lib" / "ssl")
        self.agent_conf.write_text(
            "# linux.vm, as PE's agent profile configures it after `enable replica`\n"
            "[main]\n"
            "certname = linux.vm\n"
            "server_list = primary.vm:8140,replica.vm:8140\n"
            f"rundir = {a / 'run'}\n"
            "[agent]\n"
        )
        shutil.copy("/etc/puppet/hiera.yaml", etc / "puppet" / "hiera.yaml")
        # The login user exists only in the agent's namespace (logins.add_login)
        add_login(etc, a / "home")
        self.ssh_port = build_sshd(a / "ssh", ADDRESSES["linux.vm"], a / "ssh" / "id")

    def _build_vagrant(self) -> None:
        """A test stand-in for the `vagrant` binary, on PATH for the product: it answers
        `ssh-config <vm>` in vagrant's own format (tests/golden/vagrant-ssh-config.txt), the only
        vagrant command the checks run here; anything else fails, naming itself."""
        root = self.vagrant_root
        (root / "bin").mkdir(parents=True)
        (root / "ssh-config").mkdir()
        (root / "Vagrantfile").write_text(
            "# The real-Puppet tier's lab: no VMs, see tests/real_puppet/realpuppet.py\n"
        )
        key = self.agent_root / "ssh" / "id"
        (root / "ssh-config" / "linux.vm").write_text(
            ssh_config("linux.vm", ADDRESSES["linux.vm"], self.ssh_port, key)
        )
        for server in (self.primary, self.replica):
            (root / "ssh-config" / server.name).write_text(
                ssh_config(server.name, server.address, server.ssh_port, key)
            )
        script = root / "bin" / "vagrant"
        script.write_text(
            "#!/bin/sh\n"
            "# Test stand-in for vagrant (tests/real_puppet): only what the product asks of it.\n"
            'here=$(cd "$(dirname "$0")/.." && pwd)\n'
            'case "$1" in\n'
            "  ssh-config)\n"
            "    shift; rc=0\n"
            '    for vm in "$@"; do\n'
            '      if [ -f "$here/ssh-config/$vm" ]; then cat "$here/ssh-config/$vm"\n'
            '      else echo "The provider for this Vagrant-managed machine is reporting that'
            ' it is not yet ready for SSH ($vm is not reached over SSH in this lab)." >&2; rc=1\n'
            "      fi\n"
            "    done\n"
            "    exit $rc ;;\n"
            "  *) echo \"vagrant stand-in: '$*' is not used by the real-Puppet tier\" >&2\n"
            "     exit 1 ;;\n"
            "esac\n"
        )
        script.chmod(0o755)

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
                        + _tail(server.root / "log" / "puppetserver.log")
                    )
                if self.serving(server):
                    server.starts.append(round(time.monotonic() - server.process.started, 1))
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise AssertionError(
                    f"{names} not running within {timeout:g} s:\n"
                    + "\n".join(_tail(s.root / "log" / "puppetserver.log") for s in pending)
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
                        f"{process.tail()}\n{_tail(server.pdb.log)}"
                    )
                if self.puppetdb_serving(server):
                    server.pdb.starts.append(round(time.monotonic() - process.started, 1))
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                raise AssertionError(
                    ", ".join(s.name for s in pending)
                    + f" PuppetDB not running within {timeout:g} s:\n"
                    + "\n".join(_tail(s.pdb.log) for s in pending)
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
            for process in self.processes:
                process.sample()
            self.peak_total_kib = max(self.peak_total_kib, total)

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
            f"{s.name} puppetserver.log": _tail(
                s.root / "log" / "puppetserver.log", lines, before="Shutting down due to JVM"
            )
            for s in (self.primary, self.replica)
        }
        for s in self.servers:
            tails[f"{s.name} puppetdb.log"] = _tail(s.pdb.log, lines)
        tails["linux.vm sshd.log"] = _tail(self.agent_root / "ssh" / "sshd.log", lines)
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


def capture_golden(
    lab: Lab, case: str, description: str, *, server_list: str | None = None
) -> Path | None:
    """With PE_DR_CAPTURE_GOLDEN=1: one more agent run in the lab's current state, the way the
    product runs it (`sudo -n -i puppet agent -t --noop` over SSH on linux.vm) with stderr merged
    into stdout so the file keeps the order the lines were printed in; saved as
    tests/golden/real-<case>.txt with its .source. Otherwise nothing."""
    if os.environ.get(CAPTURE_ENV) != "1":
        return None
    argv = "puppet agent -t --noop" + (f" --server_list={server_list}" if server_list else "")
    out = lab.host("linux.vm").run(
        ["sh", "-c", f"exec {argv} 2>&1"], root=True, ok_codes=range(256), timeout=600
    )
    path = GOLDEN / f"real-{case}.txt"
    path.write_text(out.stdout)
    path.with_name(path.name + ".source").write_text(
        f"Real output of {versions()}: `sudo -n -i {argv}` on linux.vm over SSH, "
        f"{description}.\n"
        "Captured by tests/real_puppet (PE_DR_CAPTURE_GOLDEN=1 .venv/bin/pytest -m real_puppet) "
        "in the real-Puppet lab: Debian's puppetserver as primary.vm (127.0.50.4) and replica.vm "
        "(127.0.50.41), the agent linux.vm with server_list = primary.vm:8140,replica.vm:8140, "
        "the project's control-repo skeleton deployed on both. stdout and stderr merged (2>&1), "
        "ANSI colours as printed."
        + (
            " The 'Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ' lines come "
            "from the gVisor sandbox the capture ran in (a real VM does not print them)."
            if "/proc/1/environ" in out.stdout
            else ""
        )
        + f"\nexit code: {out.exit_code}\n"
        f"captured: {time.strftime('%Y-%m-%d', time.gmtime())}\n"
    )
    return path


def _tail(path: Path, lines: int = 20, before: str | None = None) -> str:
    """The last `lines` of a log (those before the last line holding `before`, if one does)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} is missing)"
    if before is not None:
        marks = [i for i, line in enumerate(text) if before in line]
        text = text[: marks[-1]] if marks else text
    return "\n".join(text[-lines:])


def system_snapshot() -> dict[str, object]:
    """What the lab must not change on the real system: Debian's Puppet directories, the
    accounts, sudoers, /etc/hosts, /opt and the hostname."""
    seen: dict[str, object] = {"hostname": socket.gethostname()}
    for top in ("/etc/puppet", *SHADOWED, "/opt", "/etc/sudoers.d"):
        if not os.path.isdir(top):
            seen[top] = None
            continue
        entries = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            if top == "/opt" and dirpath != "/opt":
                dirnames[:] = []  # /opt: its top level is enough (and it is large)
            for name in sorted([*dirnames, *filenames]):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    entries.append((path, st.st_mode, st.st_size, int(st.st_mtime)))
        seen[top] = entries
    for path in ("/etc/hosts", "/etc/passwd", "/etc/group", "/etc/shadow"):
        seen[path] = Path(path).read_bytes()
    return seen
