"""`FakeLab`: `pe_dr.lab.live.Lab` with its I/O replaced, built from `LabSpec()` (the tutorial's
lab), over the recording fakes of `fakes` (hosts, vagrant, PE and GitLab). Token files, the CA and
the GitLab token are read from the fake hosts' file trees, as the real Lab reads them over SSH;
`accepts_tcp` and `probe_puppetserver` answer from scripts. Every event also goes, in order, to
`FakeLab.journal`, so tests can assert order across hosts, vagrant and HTTP; whatever is
unscripted is kept in `FakeLab.unexpected`, which the `lab` fixture checks at teardown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

from pe_dr.clients.gitlab_api import GitLabClient
from pe_dr.clients.pe_api import PEClient
from pe_dr.lab import paths
from pe_dr.lab.host import command_line
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.secrets import remember

from .fakes import (
    Exists,
    FakeHost,
    FakeHTTP,
    FakeVagrant,
    Http,
    Journal,
    LabCall,
    Put,
    Read,
    Run,
    Unscripted,
    Vagrant,
    changes_the_lab,
)

_T = TypeVar("_T")


class FakeLab(Lab):
    """The real `pe_dr.lab.live.Lab` over fake hosts, vagrant and HTTP: what it reaches through
    them is replaced (and recorded), what it decides from their answers is its own."""

    def __init__(self, spec: LabSpec | None = None) -> None:  # (no VagrantLab, no SSH pool)
        self.spec = spec or LabSpec()
        self.journal: Journal = []
        self.unexpected: list[str] = []
        self.hosts = {
            h.name: FakeHost(h.name, self.journal, self.unexpected) for h in self.spec.hosts
        }
        self.vagrant = FakeVagrant(self.hosts, self.journal)
        self.http = FakeHTTP(self.journal, self.unexpected)
        self.calls: list[LabCall] = []
        self._tcp: dict[tuple[str, int], list[bool]] = {}
        self._probes: dict[tuple[str, int], list[str]] = {}

    # --- set-up --------------------------------------------------------------------------------

    @property
    def primary(self) -> FakeHost:
        return self.hosts[self.spec.primary.name]

    @property
    def replica(self) -> FakeHost:
        return self.hosts[self.spec.replica.name]

    @property
    def gitlab_vm(self) -> FakeHost:
        return self.hosts[self.spec.gitlab.name]

    def on_tcp(self, name: str, port: int, *answers: bool) -> None:
        """`accepts_tcp(name, port)` answers these in order (the last repeats)."""
        self._tcp[(self.spec.host(name).name, port)] = list(answers)

    def on_probe(self, name: str, *answers: str, port: int = 8140) -> None:
        """`probe_puppetserver(name)` answers these in order (the last repeats)."""
        self._probes[(self.spec.host(name).name, port)] = list(answers)

    # --- views ---------------------------------------------------------------------------------

    def lab_calls(self, *names: str) -> list[LabCall]:
        return [c for c in self.calls if not names or c.name in names]

    def timeline(self) -> list[str]:
        """The journal as short lines, for asserting order across hosts, vagrant and HTTP."""
        lines = []
        for where, event in self.journal:
            if isinstance(event, Run):
                lines.append(f"{where}: {' '.join(event.argv)}")
            elif isinstance(event, Put):
                lines.append(f"{where}: put {event.path}")
            elif isinstance(event, Read):
                lines.append(f"{where}: read {event.path}")
            elif isinstance(event, Exists):
                lines.append(f"{where}: exists {event.path}")
            elif isinstance(event, Vagrant):
                lines.append(" ".join(["vagrant", event.verb, *event.args]))
            elif isinstance(event, Http):
                lines.append(f"{event.method} {event.url}")
            else:
                lines.append(" ".join(["lab", event.name, *map(str, event.args)]))
        return lines

    def command_lines(self) -> list[str]:
        """Every command line sent to any host, as the real Host would send it."""
        return [
            command_line(event.argv, root=event.root)
            for _, event in self.journal
            if isinstance(event, Run)
        ]

    def mutations(self) -> list[str]:
        """Every call that changes the lab, in order, as timeline lines: puts, commands other than
        the read-only ones, vagrant up/halt/destroy/box_add, non-GET requests other than a token
        check, forget_host. An action whose lab is already as wanted records none."""
        return [
            line
            for line, (_, event) in zip(self.timeline(), self.journal, strict=True)
            if changes_the_lab(event)
        ]

    # --- the Lab interface ---------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> None:
        event = LabCall(name, args)
        self.calls.append(event)
        self.journal.append(("lab", event))

    def host(self, name: str) -> FakeHost:
        return self.hosts[self.spec.host(name).name]

    def prefetch_hosts(self, names: Sequence[str]) -> None:
        self._call("prefetch_hosts", *(self.spec.host(n).name for n in names))

    def forget_host(self, name: str) -> None:
        self._call("forget_host", self.spec.host(name).name)

    def ca_pem(self, server: str | None = None) -> bytes:
        server = server or self.spec.primary.name
        self._call("ca_pem", server)
        return self.host(server)._content_or_fail(paths.CA_CERT, root=False)

    def _token(self, server: str, token_file: str) -> str:
        return remember(self.host(server)._content_or_fail(token_file, root=True).decode().strip())

    def token(self, server: str, token_file: str) -> str:
        self._call("token", self.spec.host(server).name, token_file)
        return self._token(server, token_file)

    def pe(self, server: str | None = None, token_file: str | None = paths.ADMIN_TOKEN) -> PEClient:
        server = server or self.spec.primary.name
        self._call("pe", server, token_file)
        token = self._token(server, token_file) if token_file else None
        return PEClient(
            server,
            host_map=self.spec.address_map,
            ca_pem=None,
            token=token,
            transport=self.http.transport(),
        )

    def _gitlab_token(self) -> str | None:
        gitlab = self.host(self.spec.gitlab.name)
        if not gitlab.has(paths.GITLAB_API_TOKEN):
            return None
        return remember(gitlab.content(paths.GITLAB_API_TOKEN).decode().strip())

    def gitlab_token(self) -> str | None:
        self._call("gitlab_token")
        return self._gitlab_token()

    def gitlab(self, token: str | None = None) -> GitLabClient:
        self._call("gitlab", "given token" if token is not None else "token file")
        return GitLabClient(
            self.spec.gitlab_url,
            host_map=self.spec.address_map,
            token=token if token is not None else self._gitlab_token(),
            transport=self.http.transport(),
        )

    def accepts_tcp(self, name: str, port: int, timeout: float = 3.0) -> bool:
        return self._scripted("accepts_tcp", self._tcp, name, port)

    def probe_puppetserver(self, name: str, *, port: int = 8140, timeout: float = 3.0) -> str:
        return self._scripted("probe_puppetserver", self._probes, name, port)

    def _scripted(
        self, call: str, scripts: dict[tuple[str, int], list[_T]], name: str, port: int
    ) -> _T:
        """The next answer scripted for `call(name, port)` (the last repeats); recorded."""
        vm = self.spec.host(name).name
        self._call(call, vm, port)
        answers = scripts.get((vm, port))
        if not answers:
            self._unexpected(f"unscripted {call}({vm}, {port})")
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def _unexpected(self, what: str) -> NoReturn:
        self.unexpected.append(what)
        raise Unscripted(what)

    def close(self) -> None:
        pass
