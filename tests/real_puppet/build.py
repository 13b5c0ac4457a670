"""The real-Puppet lab's files: the control repo and its deployments, the CA and certificates,
each server's configuration (its PuppetDB terminus included), the agent, the SSH logins and the
`vagrant` stand-in. `LabFiles` is the build half of realpuppet.RealPuppetLab."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import puppetdb_pair as pdb
from logins import add_login, build_sshd, ssh_config
from processes import Process, namespaced
from puppetdb_pair import PuppetDB
from tier import ADDRESSES, DEBIAN_CONF, ENVIRONMENT, FAILING_FACT, GIT_ENV, MARKER, PORT, SHADOWED

from labsim.testing import postgres_cluster


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


class LabFiles:
    """Builds the lab's files (RealPuppetLab sets these attributes)."""

    root: Path
    primary: Server
    replica: Server
    agent_root: Path
    vagrant_root: Path
    repo: Path
    opt: Path
    hosts: str
    ssh_port: int
    postgres: contextlib.ExitStack
    pg_data: Path | None
    commits: dict[str, str]
    deployed: dict[str, str]

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
        self.pg_data = cluster.data
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
        # PE's Facter reads external facts in /etc/puppetlabs/facter/facts.d, where the drill
        # writes its marker fact; Debian's reads only /etc/facter/facts.d (facter 4.3.0-2,
        # custom_facts/util/config.rb), so that one points at PE's
        (etc / "puppetlabs" / "facter" / "facts.d").mkdir(parents=True)
        (etc / "facter").mkdir()
        (etc / "facter" / "facts.d").symlink_to("/etc/puppetlabs/facter/facts.d")
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
