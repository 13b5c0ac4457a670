"""The replication check's write: a probe commit to the control repo on the primary, one per
attempt, whose arrival in the replica's live code the check (pe_dr.checks.replication) times.

A "probe" here, not a "marker": markers are the failover drill's writes into PE's replicated
stores (pe_dr.steps.markers). The lines and the file keep the words earlier versions wrote into
the control repo, so that a drill recognises and replaces what they left.
"""

from __future__ import annotations

from dataclasses import dataclass

from pe_dr.lab import paths
from pe_dr.lab.live import Lab
from pe_dr.steps.code_manager import GIT_IDENTITY, git

PROBE_PREFIX = "# pe-dr-drill replication marker"
# The probe lives in one file of the control repo that the drill owns and every drill replaces:
# the Puppetfile stays the admin's, and a year of drills leaves one file.
PROBE_FILE = "pe-dr-drill.marker"


@dataclass(frozen=True)
class ProbeCommit:
    """One attempt's change to the control repo: its commit, its line, its number in the run."""

    sha: str
    text: str
    attempt: int
    earlier: tuple[tuple[int, str], ...] = ()  # (attempt, commit) of this run's earlier attempts


def _attempt_of(line: str, prefix: str) -> int | None:
    """The attempt number of a probe line of `prefix` (a legacy line without one is 1)."""
    if not line.startswith(prefix):
        return None
    words = line[len(prefix) :].split()
    if not words:
        return 1
    if len(words) == 2 and words[0] == "attempt" and words[1].isdigit():
        return int(words[1])
    return None


def commit_probe(lab: Lab, probe_id: str) -> ProbeCommit:
    """Write a NEW probe for `probe_id` into the drill's probe file of the control repo on the
    primary and commit it: every attempt pushes a change of its own, so a Retry measures a push
    that really happened. Probe lines earlier versions appended to the Puppetfile are removed
    in the same commit (once: then there are none)."""
    primary = lab.host(lab.spec.primary.name)
    prefix = f"{PROBE_PREFIX} {probe_id}"
    earlier: list[tuple[int, str]] = []
    log = primary.run(git("log", "-n", "200", "--format=%H %s"), root=True).stdout
    for line in log.splitlines():
        sha, _, subject = line.partition(" ")
        n = _attempt_of(subject.removeprefix("pe-dr-drill: "), prefix.lstrip("# "))
        if n:
            earlier.append((n, sha))
    attempt = max((n for n, _ in earlier), default=0) + 1
    text = f"{prefix} attempt {attempt}"
    changed = [PROBE_FILE]
    puppetfile = f"{paths.CONTROL_REPO_DIR}/Puppetfile"
    if primary.exists(puppetfile, root=True):
        content = primary.read(puppetfile, root=True).decode()
        lines = content.splitlines()
        kept = [ln for ln in lines if not ln.startswith(PROBE_PREFIX)]
        if kept != lines:
            primary.put(puppetfile, ("\n".join(kept) + "\n").encode(), mode=0o644,
                        owner="root", group="root")  # fmt: skip
            changed.append("Puppetfile")
    primary.put(
        f"{paths.CONTROL_REPO_DIR}/{PROBE_FILE}",
        f"{text}\n".encode(),
        mode=0o644,
        owner="root",
        group="root",
    )
    primary.run(git("add", *changed), root=True)
    primary.run(git(*GIT_IDENTITY, "commit", "-m", f"pe-dr-drill: {text.lstrip('# ')}"), root=True)
    sha = primary.run(git("rev-parse", "HEAD"), root=True).stdout.strip()
    return ProbeCommit(sha, text, attempt, tuple(sorted(earlier)))
