"""What a Puppet agent run prints: the server that compiled it, the code it applied, why it
could not reach a server (interfaces §2.12, the findings, tests/golden/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pe_dr.parsing.text import lines as _lines

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
