"""A real PuppetDB pair for the real-Puppet lab: Debian 12's PuppetDB 7.12 for primary.vm and
for replica.vm, on one private PostgreSQL cluster (a database each), each serving TLS on its
VM's address, port 8081, with its VM's host certificate, and allowing only the two servers'
certificates on its query and command APIs (`certificate-allowlist`). Both puppetservers'
PuppetDB termini are configured as PE configures them after `enable replica`: `server_urls`
naming both PuppetDBs (the server's own first) and `command_broadcast = true`, so every fact set,
catalog and report an agent run produces is sent to both.

Debian's puppetdb.jar ships Clojure sources, so a plain start compiles them: 92-109 s and 408 MB
on this machine. `compiled_classes` compiles every namespace once ahead of time (AOT) into a
cache keyed by what the classes are compiled from (the package's jar and the jars its manifest
names, the JVM); with the cache first on the classpath a start takes about 19 s. The cache lives
outside the repository (PE_DR_PUPPETDB_CLASSES, default /var/cache/pe-dr-drill/puppetdb-classes)
and survives between runs; a fresh machine builds it in its first run.

Config keys are PuppetDB 7.12's own (puppetlabs/puppetdb src/puppetlabs/puppetdb/config.clj:
[database] subname/username, [puppetdb] certificate-allowlist, disable-update-checking,
[command-processing] threads; trapperkeeper-webserver-jetty9: ssl-host, ssl-port, ssl-key,
ssl-cert, ssl-ca-cert, ssl-crl-path) and the terminus's (puppet/util/puppetdb/config.rb:
server_urls, command_broadcast, soft_write_failure).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from processes import Process

JAR = Path("/usr/share/puppetdb/puppetdb.jar")
DEBIAN_CONF = Path("/etc/puppetdb")
PORT = 8081
CACHE_ENV = "PE_DR_PUPPETDB_CLASSES"
CACHE_ROOT = Path("/var/cache/pe-dr-drill/puppetdb-classes")
COMPILE_TIMEOUT = 900.0  # seconds (measured: 38 s idle, about 200 s under a load of 18)
START_TIMEOUT = 300.0  # seconds to `running` (measured: 19 s from the class cache)
# Debian's default is -Xmx192m; the JIT and GC flags are the puppetservers' (findings §3)
JAVA_ARGS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

REQUIREMENTS = (
    (str(JAR), "puppetdb"),
    ("/usr/lib/ruby/vendor_ruby/puppet/indirector/facts/puppetdb.rb", "puppet-terminus-puppetdb"),
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
)

# The services bootstrap.cfg names and every namespace in the jar, compiled with their
# dependencies (`compile` compiles what each loads): a namespace left to load from source beside
# compiled ones fails to compile at start ("Unable to resolve symbol: jetty9-service").
COMPILE_CLJ = """\
(def services (->> (slurp "%(bootstrap)s") clojure.string/split-lines
                   (map clojure.string/trim)
                   (remove #(or (clojure.string/blank? %%) (.startsWith %% "#")))
                   (map #(symbol (first (clojure.string/split %% #"/"))))))
(def nses (->> (java.util.zip.ZipFile. "%(jar)s")
               (.entries) enumeration-seq (map #(.getName %%))
               (filter #(re-matches #"puppetlabs/.*\\.clj" %%))
               (map #(-> %% (subs 0 (- (count %%) 4)) (.replace "/" ".") (.replace "_" "-")
                         symbol))
               (concat services) distinct))
(binding [*compile-path* (first *command-line-args*)]
  (doseq [n nses]
    (try (compile n) (println "compiled" n)
         (catch Throwable e (println "not compiled" n (.getMessage e))))))
"""


def manifest_jars(jar: Path = JAR) -> list[Path]:
    """The jars puppetdb.jar's manifest puts on the classpath (Debian's /usr/share/java)."""
    with zipfile.ZipFile(jar) as archive:
        text = archive.read("META-INF/MANIFEST.MF").decode()
    joined = text.replace("\r\n", "\n").replace("\n ", "")
    for line in joined.splitlines():
        if line.startswith("Class-Path:"):
            return [Path(p) for p in line.split(":", 1)[1].split()]
    return []


def cache_key() -> str:
    """Changes whenever a jar the classes come from, or the JVM, changes."""
    digest = hashlib.sha256()
    for path in [JAR, *manifest_jars(), Path("/usr/bin/java")]:
        real = path.resolve()
        st = real.stat() if real.exists() else None
        digest.update(
            f"{real} {st.st_size if st else -1} {st.st_mtime_ns if st else -1}\n".encode()
        )
    return digest.hexdigest()[:16]


def compiled_classes(log: Path, figures: dict[str, object]) -> Path:
    """The AOT class cache for this PuppetDB, built when missing (into a temp directory renamed
    into place, so a killed or concurrent build never leaves half a cache)."""
    root = Path(os.environ.get(CACHE_ENV) or CACHE_ROOT)
    target = root / cache_key()
    if (target / "puppetlabs" / "puppetdb" / "core__init.class").exists():
        figures.setdefault("puppetdb_classes", "cached")
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        script = building / "compile.clj"
        script.write_text(COMPILE_CLJ % {"jar": JAR, "bootstrap": DEBIAN_CONF / "bootstrap.cfg"})
        classes = building / "classes"
        classes.mkdir()
        started = time.monotonic()
        process = Process(
            "puppetdb-aot",
            [
                "/usr/bin/java",
                *JAVA_ARGS[1:],
                "-Xmx512m",
                "-cp",
                str(JAR),
                "clojure.main",
                str(script),
                str(classes),
            ],
            log,
        )
        try:
            process.popen.wait(COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.stop()
            raise AssertionError(
                f"compiling PuppetDB's classes took over {COMPILE_TIMEOUT:g} s: {log}"
            ) from None
        finally:
            process.sample()
        if process.popen.returncode != 0 or not (classes / "puppetlabs").is_dir():
            raise AssertionError(f"compiling PuppetDB's classes failed: {process.tail()}")
        figures["puppetdb_classes"] = {
            "built_seconds": round(time.monotonic() - started, 1),
            "mib": round(sum(f.stat().st_size for f in classes.rglob("*") if f.is_file()) / 2**20),
        }
        try:
            classes.rename(target)
        except OSError:  # another run finished first: its cache is as good
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


@dataclass
class PuppetDB:
    """One VM's PuppetDB: its files live under `root`; `database` in the shared cluster."""

    name: str  # the VM (primary.vm, replica.vm): also its certname
    address: str
    root: Path
    database: str
    ssldir: Path
    process: Process | None = None
    starts: list[float] = field(default_factory=list)  # seconds from start to `running`
    peak_rss_kib: int = 0

    @property
    def conf_d(self) -> Path:
        return self.root / "conf.d"

    @property
    def log(self) -> Path:
        return self.root / "log" / "puppetdb.log"

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def paused(self) -> bool:
        return self.process is not None and self.process.paused and self.process.running()

    def build(self, pg_port: int, allowed: list[str]) -> None:
        for sub in ("conf.d", "var", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ssl_dir = self.ssldir
        (self.root / "certificate-allowlist").write_text("".join(f"{n}\n" for n in allowed))
        (self.conf_d / "config.ini").write_text(
            "[global]\n"
            f"vardir = {self.root / 'var'}\n"
            f"logging-config = {self.root / 'logback.xml'}\n"
            "\n[puppetdb]\n"
            f"certificate-allowlist = {self.root / 'certificate-allowlist'}\n"
            "disable-update-checking = true\n"
            "\n[command-processing]\n"
            "threads = 1\n"
        )
        # trust authentication on 127.0.0.1 in a cluster of the lab's own: the password is
        # ignored, yet PuppetDB's config schema requires one (it copies it to migrator-password)
        (self.conf_d / "database.ini").write_text(
            "[database]\n"
            f"subname = //127.0.0.1:{pg_port}/{self.database}\n"
            "username = postgres\n"
            "password = unused-trust-authentication\n"
            # 5, not 25, connections in each of its write and read pools (HikariCP keeps them
            # all open): two PuppetDBs stay well under PostgreSQL's 100
            "maximum-pool-size = 5\n"
        )
        (self.conf_d / "jetty.ini").write_text(
            "[jetty]\n"
            f"ssl-host = {self.address}\n"
            f"ssl-port = {PORT}\n"
            f"ssl-key = {ssl_dir / 'private_keys' / f'{self.name}.pem'}\n"
            f"ssl-cert = {ssl_dir / 'certs' / f'{self.name}.pem'}\n"
            f"ssl-ca-cert = {ssl_dir / 'certs' / 'ca.pem'}\n"
            f"ssl-crl-path = {ssl_dir / 'crl.pem'}\n"
            f"access-log-config = {self.root / 'request-logging.xml'}\n"
        )
        shutil.copy(DEBIAN_CONF / "conf.d" / "auth.conf", self.conf_d / "auth.conf")
        shutil.copy(DEBIAN_CONF / "bootstrap.cfg", self.root / "bootstrap.cfg")
        pattern = "%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%t] [%c{2}] %m%n"
        (self.root / "logback.xml").write_text(
            "<configuration>\n"
            '  <appender name="F1" class="ch.qos.logback.core.FileAppender">\n'
            f"    <file>{self.log}</file>\n"
            f"    <encoder><pattern>{pattern}</pattern></encoder>\n"
            "  </appender>\n"
            '  <root level="info"><appender-ref ref="F1"/></root>\n'
            "</configuration>\n"
        )
        (self.root / "request-logging.xml").write_text(
            "<configuration>\n"
            '  <appender name="FILE" class="ch.qos.logback.core.FileAppender">\n'
            f"    <file>{self.root / 'log' / 'puppetdb-access.log'}</file>\n"
            '    <encoder><pattern>%h %l %u [%t] "%r" %s %b %D</pattern></encoder>\n'
            "  </appender>\n"
            '  <appender-ref ref="FILE" />\n'
            "</configuration>\n"
        )

    def argv(self, classes: Path) -> list[str]:
        """Debian's puppetdb.service ExecStart, with the class cache first on the classpath."""
        (self.root / "run" / "restart").write_text("0")
        return [
            "/usr/bin/java",
            *JAVA_ARGS,
            "-Djava.security.egd=/dev/urandom",
            "-XX:+CrashOnOutOfMemoryError",
            f"-XX:ErrorFile={self.root / 'log' / 'puppetdb_err_pid%p.log'}",
            "-cp",
            f"{classes}:{JAR}",
            "clojure.main",
            "-m",
            "puppetlabs.puppetdb.core",
            "services",
            "--config",
            str(self.conf_d),
            "--bootstrap-config",
            str(self.root / "bootstrap.cfg"),
            "--restart-file",
            str(self.root / "run" / "restart"),
        ]


def terminus_files(etc: Path, own: str, other: str) -> None:
    """A puppetserver's PuppetDB terminus, as PE writes it after `enable replica`: puppetdb.conf
    naming both PuppetDBs (the server's own first) with command_broadcast, and routes.yaml
    storing facts in PuppetDB (puppet.conf's storeconfigs and reports lines: SERVER_SETTINGS)."""
    (etc / "puppetdb.conf").write_text(
        "[main]\n"
        f"server_urls = https://{own}:{PORT},https://{other}:{PORT}\n"
        "command_broadcast = true\n"
        "soft_write_failure = false\n"
    )
    (etc / "routes.yaml").write_text(
        "---\nmaster:\n  facts:\n    terminus: puppetdb\n    cache: yaml\n"
    )


# puppet.conf's [server] (`[master]` in PE's own file) lines that send catalogs, facts and reports
# to PuppetDB
SERVER_SETTINGS = ("storeconfigs = true", "storeconfigs_backend = puppetdb", "reports = puppetdb")


def https_get(
    address: str,
    name: str,
    path: str,
    ssldir: Path,
    certname: str | None,
    timeout: float = 3.0,
) -> tuple[int, bytes] | None:
    """GET https://name:8081/path at `address` with `certname`'s certificate from `ssldir` (None:
    no client certificate), verified against the lab CA; (status, body), or None when nothing
    answered."""
    context = ssl.create_default_context(cafile=str(ssldir / "certs" / "ca.pem"))
    if certname is not None:
        context.load_cert_chain(
            str(ssldir / "certs" / f"{certname}.pem"),
            str(ssldir / "private_keys" / f"{certname}.pem"),
        )
    try:
        with (
            socket.create_connection((address, PORT), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=name) as tls,
        ):
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {name}:{PORT}\r\nAccept: application/json\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while len(data) < 1 << 20:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return int(parts[1]), body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
