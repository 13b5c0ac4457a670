"""The drill's journal: steps, checks and measurements, written as JSON and rendered as Markdown."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pe_dr import __version__
from pe_dr.oracles.checks import CheckResult
from pe_dr.secrets import scrub

MEASUREMENTS = ("rto_seconds", "replication_lag_seconds", "failback_seconds")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    name: str
    status: str  # completed | cached | failed | interrupted | skipped
    started_at: str
    ended_at: str
    attempts: int
    detail: str = ""
    chapter: str = ""  # the flow that ran it: lab-setup, failover-drill, ...


@dataclass
class DrillReport:
    flow: str
    flow_run_id: str
    lab: dict[str, object]
    started_at: str = field(default_factory=utc_now)
    ended_at: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    checks: list[dict[str, object]] = field(default_factory=list)
    measurements: dict[str, float | None] = field(
        default_factory=lambda: dict.fromkeys(MEASUREMENTS)
    )
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    # "SIGINT (Ctrl-C) during measure-failover": the drill was stopped, not failed
    interrupted: str | None = None

    @property
    def status(self) -> str:
        if self.interrupted is not None:
            return "interrupted"
        ok = (
            self.error is None
            and all(s.status in {"completed", "cached", "skipped"} for s in self.steps)
            and all(c["passed"] for c in self.checks)
        )
        return "passed" if ok else "failed"

    def add_check(self, result: CheckResult) -> None:
        self.checks = [c for c in self.checks if c["name"] != result.name]
        self.checks.append(
            {
                "name": result.name,
                "passed": result.passed,
                "detail": result.detail,
                "evidence": result.evidence,
                "seconds": result.seconds,
            }
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "flow": self.flow,
            "flow_run_id": self.flow_run_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "steps": [asdict(s) for s in self.steps],
            "checks": self.checks,
            "measurements": self.measurements,
            "notes": self.notes,
            "error": self.error,
            "interrupted": self.interrupted,
            "lab": self.lab,
            "versions": versions(),
        }

    def to_json(self) -> str:
        return scrub(json.dumps(self.to_dict(), indent=2, default=str)) + "\n"

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write reports/drill-<UTC time>.json atomically; returns its path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = self.started_at.replace(":", "").replace("-", "").replace(".", "")
        target = folder / f"drill-{stamp}.json"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".drill-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.to_json())
        os.replace(tmp, target)
        return target

    def to_markdown(self) -> str:
        m = self.measurements

        def fig(key: str) -> str:
            value = m.get(key)
            return "—" if value is None else f"{value:.1f} s"

        lines = [
            f"# DR drill {self.status.upper()}",
            "",
            f"Lab `{self.lab.get('name')}`, flow run `{self.flow_run_id}`, "
            f"{self.started_at} → {self.ended_at or 'running'}",
            "",
            "| RTO | replication lag | failback |",
            "|---|---|---|",
            f"| {fig('rto_seconds')} | {fig('replication_lag_seconds')} | "
            f"{fig('failback_seconds')} |",
            "",
            "## Checks",
            "",
            "| check | verdict | what it saw |",
            "|---|---|---|",
        ]
        for c in self.checks:
            verdict = "pass" if c["passed"] else "**FAIL**"
            lines.append(f"| {c['name']} | {verdict} | {_cell(str(c['detail']))} |")
        lines += [
            "",
            "## Steps",
            "",
            "| chapter | step | status | attempts | started | ended |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.steps:
            lines.append(
                f"| {s.chapter} | {s.name} | {s.status} | {s.attempts} | {s.started_at} "
                f"| {s.ended_at} |"
            )
        if self.notes or self.error:
            lines += ["", "## Notes", ""]
            lines += [f"- {_cell(n)}" for n in self.notes]
            if self.error:
                lines.append(f"- error: {_cell(self.error)}")
        return scrub("\n".join(lines) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def versions() -> dict[str, str]:
    found = {"pe-dr-drill": __version__, "python": platform.python_version()}
    for dist in ("prefect", "fabric", "httpx", "python-vagrant"):
        try:
            from importlib.metadata import version

            found[dist] = version(dist)
        except Exception:
            found[dist] = "unknown"
    return found
