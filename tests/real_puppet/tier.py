"""What the real-Puppet tier needs and keeps: the lab's names and addresses, the Debian packages,
whether this machine can run it, the golden capture, and the snapshot that proves the real system
unchanged."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import puppetdb_pair as pdb
import pytest

from pe_dr.lab.live import Lab
from pe_dr.lab.spec import Role

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


def tier_marks() -> list[pytest.MarkDecorator]:
    """Every module of the tier: real Puppet, slow, skipped where it cannot run, and bound to 900 s
    (the first test also waits for the lab and the PuppetDB class cache)."""
    reason = why_not_runnable()
    return [
        pytest.mark.real_puppet,
        pytest.mark.slow,
        pytest.mark.timeout(900),
        pytest.mark.skipif(reason is not None, reason=reason or ""),
    ]


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


def tail(path: Path, lines: int = 20, before: str | None = None) -> str:
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
