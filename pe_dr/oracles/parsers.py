"""Parsers for what the lab prints: vagrant, ssh-config, puppet agent, infra status, puppet-code.

Pure functions over text (no I/O). Formats and samples: ../shared/reference/pe-dr-interfaces.md
(§2.7 status JSON, §2.10 puppet-code, §2.12 agent runs, §6 vagrant) and tests/golden/.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pe_dr.errors import PermanentError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_VAGRANT_COMMA = "%!(VAGRANT_COMMA)"


def _lines(text: str) -> list[str]:
    """Lines without ANSI colours, CRs or trailing blanks."""
    return [_ANSI.sub("", line).rstrip() for line in text.replace("\r\n", "\n").split("\n")]


# --- vagrant -------------------------------------------------------------------------------------


def _unescape_vagrant(data: str) -> str:
    return data.replace(_VAGRANT_COMMA, ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_vagrant_status(text: str) -> dict[str, str]:
    """`vagrant status --machine-readable` → {machine name: state id} (e.g. `running`).

    Rows are `timestamp,target,type,data`; only `state` rows count, so `metadata`, `ui` and
    `provider-name` rows (and lines that are not rows at all) are ignored.
    """
    states: dict[str, str] = {}
    for line in _lines(text):
        parts = line.split(",", 3)
        if len(parts) < 4 or parts[2] != "state" or not parts[1]:
            continue
        states[parts[1]] = _unescape_vagrant(parts[3]).strip()
    return states


def vagrant_error_exit(text: str) -> str | None:
    """The message of an `error-exit` row of machine-readable vagrant output, if there is one."""
    for line in _lines(text):
        parts = line.split(",", 3)
        if len(parts) == 4 and parts[2] == "error-exit":
            fields = parts[3].split(",", 1)
            message = _unescape_vagrant(fields[-1]).strip()
            return message or fields[0]
    return None


def parse_snapshot_list(text: str) -> list[str]:
    """`vagrant snapshot list VM` (human output) → snapshot names, [] when there are none."""
    if "No snapshots have been taken yet" in text or "not created" in text:
        return []
    names = []
    for line in _lines(text):
        name = line.strip()
        if not name or name.startswith("==>"):
            continue
        names.append(name)
    return names


@dataclass(frozen=True)
class SSHParams:
    """How to reach a VM over SSH, as `vagrant ssh-config` says."""

    host: str
    port: int
    user: str
    key_file: str


def _ssh_value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return raw[1:-1]
    try:
        parts = shlex.split(raw)
    except ValueError:
        return raw
    return parts[0] if len(parts) == 1 else raw


def parse_ssh_config(text: str) -> dict[str, SSHParams]:
    """`vagrant ssh-config [vm]` → {Host alias: SSHParams}; every `Host` block gives one entry.

    The first IdentityFile of a block wins (vagrant lists the machine's private key first).
    Blocks without a HostName are skipped (there is nothing to connect to).
    """
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in _lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"(\S+?)(?:\s*=\s*|\s+)(.*)$", stripped)
        if not match:
            continue
        key, value = match.group(1).lower(), _ssh_value(match.group(2))
        if key == "host":
            current = blocks.setdefault(value, {})
            continue
        if current is not None and key not in current:
            current[key] = value
    result: dict[str, SSHParams] = {}
    for name, opts in blocks.items():
        if "hostname" not in opts:
            continue
        try:
            port = int(opts.get("port", "22"))
        except ValueError:
            raise PermanentError(
                f"vagrant ssh-config for {name} has a port that is not a number: {opts['port']!r}"
            ) from None
        result[name] = SSHParams(
            host=opts["hostname"],
            port=port,
            user=opts.get("user", "vagrant"),
            key_file=opts.get("identityfile", ""),
        )
    return result


# --- puppet agent --------------------------------------------------------------------------------

_CONFIG_VERSION = re.compile(r"Applying configuration version '([^']*)'")
_USING_ENV = re.compile(r"Using environment '([^']*)'")
_CACHED_CATALOG = re.compile(r"Using cached catalog from environment")
_CODE_MANAGER_VERSION = re.compile(r"^(?P<server>.+)-(?P<env>[a-z0-9_]+)-(?P<commit>[0-9a-f]{11})$")
# Puppet's server_list resolver (lib/puppet/http/resolver/server_list.rb): a connection error is
# "Unable to connect to server from server_list setting: <detail>", an HTTP error is "Puppet server
# <host>:<port> is unavailable: <code> <reason>"; both end "Trying with next server from
# server_list." except for the last entry. Real texts: ../shared/reference/real-world-findings.md
# §2 and tests/golden/agent-*.txt.
_UNABLE = re.compile(
    r"Unable to connect to server from server_list setting:.*?"
    r"(?:Request to \w+://(?P<url>[^/\s]+)|connection to (?P<tcp>[^\s(]+))"
)
_UNAVAILABLE = re.compile(r"Puppet server (?P<server>\S+?) is unavailable: (?P<code>\d{3})")
_WAITED = re.compile(r"(?:failed|timed out \w+ operation) after (?P<s>\d+(?:\.\d+)?) seconds")
SUCCESS_CODES = frozenset({0, 2})


class DownKind(StrEnum):
    """How a server in server_list looked to the agent that could not use it."""

    REFUSED = "refused"  # nothing listens: a stopped service, the tutorial's halted VM
    HUNG = "hung"  # accepts TCP, never completes the connection: waits http_connect_timeout
    SILENT = "silent"  # connected, never answered HTTP: waits http_read_timeout
    UNREACHABLE = "unreachable"  # no route to the host (a powered-off VM on a host-only network)
    UNAVAILABLE = "unavailable"  # answered with an HTTP error (503 while starting)
    UNRESOLVED = "unresolved"  # the name does not resolve
    OTHER = "other"


def down_kind(text: str) -> DownKind:
    """The kind of outage a server_list warning describes."""
    lowered = text.lower()
    if "is unavailable:" in lowered:
        return DownKind.UNAVAILABLE
    if "connection refused" in lowered:
        return DownKind.REFUSED
    if "timed out connect operation" in lowered or "execution expired" in lowered:
        return DownKind.HUNG
    if "timed out read operation" in lowered:
        return DownKind.SILENT
    if "no route to host" in lowered or "host is unreachable" in lowered:
        return DownKind.UNREACHABLE
    if "getaddrinfo" in lowered or "name or service not known" in lowered:
        return DownKind.UNRESOLVED
    return DownKind.OTHER


@dataclass(frozen=True)
class ServerTrouble:
    """A server of server_list the agent tried and could not use, as the agent reported it."""

    server: str  # host:port
    kind: DownKind
    waited_seconds: float | None  # what the agent says it waited, when it says
    message: str

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "kind": self.kind.value,
            "waited_seconds": self.waited_seconds,
            "message": self.message,
        }


@dataclass(frozen=True)
class AgentRun:
    """One `puppet agent -t` run, judged as Puppet judges it.

    `succeeded`: the run exited 0 or 2 (detailed exit codes; 1, 4 and 6 are failures) and applied
    a catalog fetched from a server now (not the cached one). `Error:` lines do not change that: a
    failing custom fact or a failed report upload prints them in a run that still applied its
    catalog; they are kept in `errors` as evidence.
    """

    exit_code: int
    succeeded: bool
    changed: bool
    configuration_version: str | None
    server: str | None
    environment: str | None
    commit: str | None
    troubles: tuple[ServerTrouble, ...] = ()
    errors: tuple[str, ...] = ()
    cached_catalog: bool = False

    @property
    def unreachable_servers(self) -> list[str]:
        return [t.server for t in self.troubles]

    @property
    def served_by(self) -> str | None:
        """The short name of the server that compiled the applied catalog, for a successful run."""
        return self.server if self.succeeded else None


def _with_port(server: str) -> str:
    return server if re.search(r":\d+$", server) else f"{server}:8140"


def _trouble(line: str, following: str) -> ServerTrouble | None:
    found: str | None = None
    if m := _UNABLE.search(line):
        found = m.group("url") or m.group("tcp")
    elif m := _UNAVAILABLE.search(line):
        found = m.group("server")
    if not found:
        return None
    text = line.split(": ", 1)[-1].strip()
    # The last server of the list is reported as an error whose reason is on the lines after
    # "Wrapped exception:".
    kind = down_kind(text)
    if kind is DownKind.OTHER and following:
        kind = down_kind(following)
    waited = _WAITED.search(text)
    return ServerTrouble(
        server=_with_port(found),
        kind=kind,
        waited_seconds=float(waited.group("s")) if waited else None,
        message=text.removesuffix("Trying with next server from server_list.").strip(),
    )


def parse_agent_run(output: str, exit_code: int) -> AgentRun:
    """Parse `puppet agent -t [--noop]` output (stdout and stderr together) and its exit code.

    ANSI colours are removed first (a real agent colours its output even when piped). With Code
    Manager the configuration version is `<short host>-<env>-<11 hex of the commit>` (e.g.
    `replica-production-9f6c5881a8e`): `server` is the host that compiled the catalog and
    `commit` the deployed control-repo commit; other version formats leave both None.
    """
    lines = [line.strip() for line in _lines(output)]
    version: str | None = None
    environment: str | None = None
    cached = False
    troubles: dict[str, ServerTrouble] = {}
    errors: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            errors.append(line)
        if version is None and (m := _CONFIG_VERSION.search(line)):
            version = m.group(1)
        if environment is None and (m := _USING_ENV.search(line)):
            environment = m.group(1)
        if _CACHED_CATALOG.search(line):
            cached = True
        # the last server's reason follows on the line after "Wrapped exception:"
        wrapped = lines[i + 1 : i + 2] == ["Wrapped exception:"]
        following = " ".join(lines[i + 2 : i + 3]) if wrapped else ""
        trouble = _trouble(line, following)
        if trouble is not None and trouble.server not in troubles:
            troubles[trouble.server] = trouble
    server_name: str | None = None
    commit: str | None = None
    if version:
        if environment and (
            m := re.match(rf"^(.+)-{re.escape(environment)}-([0-9a-f]{{11}})$", version)
        ):
            server_name, commit = m.group(1), m.group(2)
        elif m := _CODE_MANAGER_VERSION.match(version):
            server_name, commit = m.group("server"), m.group("commit")
            environment = environment or m.group("env")
    return AgentRun(
        exit_code=exit_code,
        succeeded=exit_code in SUCCESS_CODES and version is not None and not cached,
        changed=exit_code == 2,
        configuration_version=version,
        server=server_name,
        environment=environment,
        commit=commit,
        troubles=tuple(troubles.values()),
        errors=tuple(errors),
        cached_catalog=cached,
    )


# --- puppet infrastructure status --format=json --------------------------------------------------


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


def _alert(alert: object) -> Alert:
    if isinstance(alert, dict):
        message = str(alert.get("message", "")).strip()
        severity = str(alert.get("severity") or "error").strip().lower()
        return Alert(severity, message or json.dumps(alert, sort_keys=True))
    return Alert("error", str(alert))  # no severity given: assume the worst


def parse_infra_status(json_text: str) -> list[ServiceStatus]:
    """`puppet infrastructure status --format=json` → one ServiceStatus per service and server."""
    try:
        data = _json_start(json_text, "[")
    except ValueError:
        raise PermanentError(
            "`puppet infrastructure status --format=json` did not print a JSON array "
            f"(it printed: {_first_line(json_text)})"
        ) from None
    if not isinstance(data, list):
        raise PermanentError("`puppet infrastructure status --format=json` did not print a list")
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
    try:
        data = _json_start(output, "[")
    except ValueError:
        raise PermanentError(
            f"puppet-code deploy did not print its JSON result (it printed: {_first_line(output)})"
        ) from None
    if not isinstance(data, list):
        raise PermanentError("puppet-code deploy printed JSON that is not a list")
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
