"""What PE prints and answers: infrastructure status, puppet-code deploys, ssh-keyscan,
puppet-access, PuppetDB sync (interfaces §2.7, §2.10, tests/golden/)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pe_dr.errors import PermanentError
from pe_dr.parsing.text import lines as _lines


@dataclass(frozen=True)
class Alert:
    """An alert a PE service reports, e.g. error "Database replication for Classifier is inactive"
    on a service whose state is still `running` (peadm spec/fixtures/infrastatus.json)."""

    severity: str  # error | warning | info
    message: str


@dataclass(frozen=True)
class ServiceStatus:
    """One entry of `puppet infrastructure status --format=json`."""

    service: str
    display_name: str
    server: str
    state: str
    url: str
    alerts: list[Alert] = field(default_factory=list)
    type: str = ""

    @property
    def errors(self) -> list[Alert]:
        return [a for a in self.alerts if a.severity == "error"]


def _json_start(text: str, opener: str) -> Any:
    """The first JSON value starting with `opener` at the start of a line (after any chatter)."""
    decoder = json.JSONDecoder()
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(opener):
            start = offset + len(line) - len(line.lstrip())
            return decoder.raw_decode(text, start)[0]
        offset += len(line)
    raise ValueError("no JSON value found")


def _json_array(text: str, command: str) -> list[Any]:
    """The JSON array `command` printed (after any chatter); PermanentError if it printed none."""
    try:
        data = _json_start(text, "[")
    except ValueError:
        raise PermanentError(
            f"{command} did not print a JSON array (it printed: {_first_line(text)})"
        ) from None
    if not isinstance(data, list):
        raise PermanentError(f"{command} printed JSON that is not a list")
    return data


def _alert(alert: object) -> Alert:
    if isinstance(alert, dict):
        message = str(alert.get("message", "")).strip()
        severity = str(alert.get("severity") or "error").strip().lower()
        return Alert(severity, message or json.dumps(alert, sort_keys=True))
    return Alert("error", str(alert))  # no severity given: assume the worst


def parse_infra_status(json_text: str) -> list[ServiceStatus]:
    """`puppet infrastructure status --format=json` → one ServiceStatus per service and server."""
    data = _json_array(json_text, "`puppet infrastructure status --format=json`")
    services = []
    for entry in data:
        if not isinstance(entry, dict):
            raise PermanentError(
                "`puppet infrastructure status --format=json` printed an entry that is not "
                "an object"
            )
        services.append(
            ServiceStatus(
                service=str(entry.get("service") or ""),
                display_name=str(entry.get("display_name") or entry.get("service") or ""),
                server=str(entry.get("server") or ""),
                state=str(entry.get("state") or "unknown"),
                url=str(entry.get("url") or ""),
                alerts=[_alert(a) for a in entry.get("alerts") or []],
                type=str(entry.get("type") or ""),
            )
        )
    return services


def unhealthy(services: Iterable[ServiceStatus]) -> list[ServiceStatus]:
    """Services whose state is not `running` (peadm's health rule) or that report an
    error-severity alert: PE keeps a service whose database replication broke `running` and says
    so only in an alert (peadm spec/fixtures/infrastatus.json)."""
    return [s for s in services if s.state != "running" or s.errors]


def servers(services: Iterable[ServiceStatus]) -> set[str]:
    """The servers that appear in a status list (primary, and the replica once provisioned)."""
    return {s.server for s in services if s.server}


def _first_line(text: str) -> str:
    for line in _lines(text):
        if line.strip():
            return line.strip()[:200]
    return "nothing"


# --- puppet-code deploy --wait -------------------------------------------------------------------


@dataclass(frozen=True)
class DeployResult:
    """One environment of `puppet-code deploy … --wait`."""

    environment: str
    status: str
    deploy_signature: str | None
    id: int | None
    error: str | None = None


def _deploy_error(entry: dict[str, Any]) -> str | None:
    error = entry.get("error")
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        return str(error.get("msg") or error.get("message") or json.dumps(error, sort_keys=True))
    return str(error)


def parse_code_deploy(output: str) -> list[DeployResult]:
    """`puppet-code deploy ENV --wait` output: `Found N environments.` lines, then a JSON array."""
    data = _json_array(output, "puppet-code deploy")
    results = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        raw_id = entry.get("id")
        results.append(
            DeployResult(
                environment=str(entry.get("environment") or ""),
                status=str(entry.get("status") or "unknown"),
                deploy_signature=entry.get("deploy-signature") or None,
                id=raw_id if isinstance(raw_id, int) else None,
                error=_deploy_error(entry),
            )
        )
    return results


# --- ssh-keyscan, puppet access ------------------------------------------------------------------


@dataclass(frozen=True)
class KnownHost:
    """One host key, as `r10k_known_hosts` wants it: {name, type, key}."""

    name: str
    type: str
    key: str


def parse_ssh_keyscan(output: str) -> list[KnownHost]:
    """`ssh-keyscan -t rsa,ed25519 HOST` → host keys; `#` comment lines are skipped."""
    keys = []
    for line in _lines(output):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) < 3 or not parts[1].startswith(("ssh-", "ecdsa-", "sk-")):
            continue
        keys.append(KnownHost(name=parts[0], type=parts[1], key=parts[2]))
    return keys


def parse_access_login(output: str) -> str | None:
    """The token file path from `puppet access login` (`Access token saved to: F`), else None."""
    for line in _lines(output):
        m = re.search(r"Access token saved to:\s*(\S.*)$", line)
        if m:
            return m.group(1).strip()
    return None


# --- PuppetDB sync ---------------------------------------------------------------------------

# PE's words for PuppetDB's sync, an info alert of its status ("Info: Last sync successfully
# completed 25 seconds ago (at 2020-04-07T22:16:20.231Z)": peadm documentation/status.md, real
# output of `puppet infrastructure status`)
_LAST_SYNC = re.compile(r"Last sync successfully completed (?P<s>\d+(?:\.\d+)?) seconds ago")


def last_sync_age(alerts: Iterable[object]) -> float | None:
    """Seconds since PuppetDB's last successful sync, from its status alerts (None: not said)."""
    for alert in alerts:
        message = alert.get("message") if isinstance(alert, dict) else getattr(alert, "message", "")
        found = _LAST_SYNC.search(str(message or ""))
        if found:
            return float(found.group("s"))
    return None
