"""The drill's journal: steps, checks and measurements, written as JSON and rendered as Markdown."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pe_dr import __version__
from pe_dr.checks.result import CheckResult
from pe_dr.figures import FIGURE_NAMES, MEASUREMENTS, REGISTRY, Registry
from pe_dr.secrets import scrub


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

    def seconds(self) -> float | None:
        try:
            return round((_moment(self.ended_at) - _moment(self.started_at)).total_seconds(), 3)
        except ValueError:
            return None


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
    # "rejected in the Prefect UI: …": called off before it acted on the lab (status cancelled)
    cancelled: str | None = None
    # the budgets the run was given, by figure (rto_seconds: 900.0, ...)
    budgets: dict[str, float] = field(default_factory=dict)
    # the PE version the primary reported at the start (None: not read), beside the spec's
    pe_version_reported: str | None = None
    # where the journal was written (None: not written); not part of the journal itself
    journal_path: str | None = None

    def failure(self) -> dict[str, object] | None:
        """What failed, for the reader who has a minute: the check and what it saw, the step,
        its chapter and attempts; None when the run passed or was stopped."""
        if self.status != "failed":
            return None
        steps = [s for s in self.steps if s.status == "failed"]
        step = steps[0] if steps else None
        checks = [c for c in self.checks if not c["passed"]]
        check = checks[0] if checks else None
        return {
            "check": check["name"] if check else None,
            "detail": (check["detail"] if check else None) or (step.detail if step else self.error),
            "evidence": fields(check["evidence"]) if check else {},
            "step": step.name if step else None,
            "chapter": step.chapter if step else None,
            "attempts": step.attempts if step else None,
        }

    def next_step(self) -> str | None:
        """The next thing to do, or None when there is none."""
        retry = f"pe-dr retry {self.flow_run_id}"
        if self.status == "interrupted":
            return f"resume it: {retry} (or Retry on the flow run in the Prefect UI)"
        if self.status == "cancelled":
            return (
                "nothing was halted or destroyed; to drill after all, Retry this run in the "
                "Prefect UI (it asks for approval again) or start a new run"
            )
        if self.status == "failed":
            return (
                f"clear the cause above, then Retry this run: {retry} (or Retry on the flow run "
                "in the Prefect UI); the steps that passed are not run again"
            )
        return None

    def figures(self, registry: Registry = REGISTRY) -> list[dict[str, object]]:
        """Each figure beside its budget and the margin left (negative: over budget)."""
        rows: list[dict[str, object]] = []
        for key in registry.keys:
            value, budget = self.measurements.get(key), self.budgets.get(key)
            margin = None if value is None or budget is None else round(budget - value, 3)
            rows.append({"figure": key, "seconds": value, "budget": budget, "margin": margin})
        return rows

    @property
    def status(self) -> str:
        if self.cancelled is not None:
            return "cancelled"
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
            "failure": self.failure(),
            "next": self.next_step(),
            "figures": self.figures(),
            "budgets": self.budgets,
            "steps": [{**asdict(s), "seconds": s.seconds()} for s in self.steps],
            "checks": self.checks,
            "measurements": self.measurements,
            "notes": self.notes,
            "error": self.error,
            "interrupted": self.interrupted,
            "cancelled": self.cancelled,
            "lab": self.lab,
            "pe_version": {
                "spec": self.lab.get("pe_version"),
                "reported_by_primary": self.pe_version_reported,
            },
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
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.to_json())
                out.flush()
                os.fsync(out.fileno())  # a full disk shows here, not after the rename
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):  # no half-written file left behind
                os.unlink(tmp)
            raise
        return target

    def to_markdown(self) -> str:
        """The verdict first; when it failed, what failed, what it saw and what to do next; the
        figures beside their budgets; the checks in full; the steps by chapter, with durations."""
        lines = [
            f"# DR drill {self.status.upper()}",
            "",
            f"Lab `{self.lab.get('name')}`, flow run `{self.flow_run_id}`, "
            f"{self.started_at} → {self.ended_at or 'running'}",
            "",
        ]
        if self.pe_version_reported:
            spec = self.lab.get("pe_version")
            differs = (
                f" (the lab spec says {spec})" if spec and spec != self.pe_version_reported else ""
            )
            lines += [f"PE {self.pe_version_reported} on the primary{differs}", ""]
        failure = self.failure()
        if failure is not None:
            what = f"check **{failure['check']}**" if failure["check"] else "a step"
            where = f"step `{failure['step']}`" if failure["step"] else "the run"
            if failure["chapter"]:
                where += f" of {failure['chapter']}"
            if failure["attempts"]:
                where += f", after {failure['attempts']} attempt(s)"
            lines += [f"**Failed:** {what} at {where}: {_cell(str(failure['detail']))}", ""]
            evidence = failure["evidence"]
            if isinstance(evidence, dict) and evidence:
                lines += ["What it saw:", "", "| field | value |", "|---|---|"]
                lines += [f"| {k} | {_cell(_shown(v))} |" for k, v in evidence.items()]
                lines.append("")
        elif self.cancelled:
            lines += [f"**Called off:** {_cell(self.cancelled)}", ""]
        elif self.interrupted:
            lines += [f"**Stopped:** {_cell(self.interrupted)}", ""]
        next_step = self.next_step()
        if next_step:
            lines += [f"**Next:** {_cell(next_step)}", ""]
        lines += ["## Figures", "", "| figure | measured | budget | margin |", "|---|---|---|---|"]
        for row in self.figures():
            lines.append(
                f"| {FIGURE_NAMES[str(row['figure'])]} | {_secs(row['seconds'])} "
                f"| {_secs(row['budget'])} | {_secs(row['margin'])} |"
            )
        lines += self._stores()
        # a list, not a table: the UI cuts a table's long cells at its edge
        lines += ["", "## Checks", ""]
        for c in self.checks:
            verdict = "pass" if c["passed"] else "**FAIL**"
            lines.append(f"- **{c['name']}** {verdict}: {_cell(_shown(c['detail']))}")
        lines += ["", "## Steps"]
        for chapter, steps in self.chapters():
            took = sum(s.seconds() or 0.0 for s in steps)
            lines += ["", f"### {chapter or 'drill'} ({took:.1f} s)", ""]
            lines += ["| step | status | attempts | took |", "|---|---|---|---|"]
            for s in steps:
                status = s.status if s.status != "failed" else "**failed**"
                lines.append(f"| {s.name} | {status} | {s.attempts} | {_secs(s.seconds())} |")
        if self.notes or self.error:
            lines += ["", "## Notes", ""]
            lines += [f"- {_cell(n)}" for n in self.notes]
            if self.error:
                lines.append(f"- error: {_cell(self.error)}")
        return scrub("\n".join(lines) + "\n")

    def _stores(self) -> list[str]:
        """The replicated stores side by side, from the failover drill's replica check."""
        check = next((c for c in self.checks if c["name"] == "replica_serves"), None)
        evidence = check["evidence"] if check else None
        stores = evidence.get("stores") if isinstance(evidence, dict) else None
        if not isinstance(stores, dict) or not stores:
            return []
        lines = [
            "",
            "## Stores (RPO)",
            "",
            "| store | read by | marker on replica | replication latency | RPO | writes lost "
            "| sync age at halt | replication PE reports |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, s in stores.items():
            if not isinstance(s, dict):
                continue
            told = s.get("replication_reported")
            said = ", ".join(f"{k} {v}" for k, v in told.items()) if isinstance(told, dict) else "—"
            lost = s.get("lost_writes")
            lines.append(
                f"| {name} | {s.get('answered_by') or '**none**'} "
                f"| {'yes' if s.get('marker_on_replica') else '**no**'} "
                f"| {_secs(s.get('replication_latency_s'))} | {_secs(s.get('rpo_seconds'))} "
                f"| {'—' if lost is None else lost} | {_secs(s.get('sync_age_at_halt_s'))} "
                f"| {_cell(said)} |"
            )
        return lines

    def chapters(self) -> list[tuple[str, list[StepRecord]]]:
        """The steps grouped by chapter, in the order the chapters started."""
        grouped: dict[str, list[StepRecord]] = {}
        for s in self.steps:
            grouped.setdefault(s.chapter, []).append(s)
        return list(grouped.items())


def _secs(value: object) -> str:
    return "—" if value is None else f"{float(value):.1f} s"  # type: ignore[arg-type]


def _moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def fields(evidence: object, prefix: str = "") -> dict[str, object]:
    """Evidence as flat fields: `agents.linux.vm.served_by: replica.vm`, lists joined."""
    flat: dict[str, object] = {}
    if isinstance(evidence, dict):
        for key, value in evidence.items():
            flat.update(fields(value, f"{prefix}{key}."))
        return flat
    if isinstance(evidence, list) and all(not isinstance(v, dict | list) for v in evidence):
        return {prefix.rstrip("."): ", ".join(str(v) for v in evidence)}
    if isinstance(evidence, list):
        for i, value in enumerate(evidence):
            flat.update(fields(value, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): evidence}


def _shown(value: object) -> str:
    """A value as a reader writes it, not as Python's repr: a list as its items, a mapping as
    its pairs."""
    if isinstance(value, list | tuple | set):
        return ", ".join(_shown(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_shown(v)}" for k, v in value.items()) if value else "none"
    return "—" if value is None else str(value)


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
