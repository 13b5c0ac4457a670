"""Recording fakes of what a Lab reaches, for unit tests of pe_dr.steps: hosts, vagrant, PE and
GitLab (`fake_lab.FakeLab` puts them together behind the real Lab).

* `FakeHost` records every call in order (`Run` with the argv list, `Put` with content, mode and
  owner, `Read`, `Exists`), holds an in-memory file tree, and answers commands only from replies
  registered per test (`host.on(argv, ...)`): an unscripted command fails the test.
* `FakeVagrant` records status/state/up/halt/destroy/boxes/box_add over scripted VM states.
* `FakeHTTP` is the `httpx.MockTransport` handler behind real `PEClient` and `GitLabClient`
  objects: it records method, URL, query and JSON body, and answers only routes the test set.

Anything unscripted raises `Unscripted` (an AssertionError, which no action catches) and is kept
in the lab's `unexpected` list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from pe_dr.errors import CommandFailed, ConfigError
from pe_dr.lab.host import CommandResult, command_line


class Unscripted(AssertionError):
    """The code under test did something the test did not script."""


# --- recorded events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A command run on a host; timeout and accepted exit codes are kept but not compared."""

    argv: list[str]
    root: bool = False
    stdin: str | bytes | None = None
    timeout: float = field(default=600.0, compare=False)
    ok_codes: tuple[int, ...] = field(default=(0,), compare=False)


@dataclass(frozen=True)
class Put:
    """A file written to a host (SFTP, then `install -m MODE -o OWNER -g GROUP`)."""

    path: str
    content: bytes
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Read:
    path: str
    root: bool = False


@dataclass(frozen=True)
class Exists:
    path: str
    root: bool = False


@dataclass(frozen=True)
class Vagrant:
    """A VagrantLab call: `verb` is the method name, `args` its arguments."""

    verb: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Http:
    """One HTTP request: URL without query string, the query as a dict, the JSON body (or text)."""

    method: str
    url: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    request: httpx.Request | None = field(default=None, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        assert self.request is not None
        return self.request.headers.get(name)


@dataclass(frozen=True)
class LabCall:
    """A call of one of the Lab's own methods (forget_host, accepts_tcp, pe, token, ...)."""

    name: str
    args: tuple[Any, ...] = ()


Event = Run | Put | Read | Exists | Vagrant | Http | LabCall
Journal = list[tuple[str, Event]]


# --- hosts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a scripted command does: exit code and output, an effect on the host's files first,
    or an exception raised instead of an answer (e.g. a TransientError for an unreachable VM)."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    effect: Callable[[FakeHost], None] | None = None
    raises: BaseException | None = None


Responder = Callable[["FakeHost", list[str], "str | bytes | None"], Reply]
Answer = Reply | Responder


@dataclass
class FakeFile:
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


class FakeHost:
    """One VM: an in-memory file tree, scripted commands, and the record of every call."""

    def __init__(self, name: str, journal: Journal, unexpected: list[str]) -> None:
        self.name = name
        self.files: dict[str, FakeFile] = {}
        self.dirs: set[str] = set()
        self.calls: list[Run | Put | Read | Exists] = []
        self._script: dict[tuple[str, ...], list[Answer]] = {}
        self._journal = journal
        self._unexpected = unexpected

    # --- set-up (not recorded) ---------------------------------------------------------------

    def on(
        self,
        argv: Sequence[str],
        *answers: Answer,
        exit_code: int = 0,
        stdout: str = "",
        stderr: str = "",
        effect: Callable[[FakeHost], None] | None = None,
    ) -> FakeHost:
        """Script `argv` (exact match): answers are used in order, the last one for every later
        call. Without answers, one Reply from the keyword arguments."""
        script = list(answers) or [Reply(exit_code, stdout, stderr, effect)]
        self._script[tuple(argv)] = script
        return self

    def write(
        self,
        path: str,
        content: bytes | str,
        *,
        mode: int = 0o644,
        owner: str = "root",
        group: str = "root",
    ) -> FakeHost:
        """Put a file in the tree as the lab already holds it (not a recorded call)."""
        data = content.encode() if isinstance(content, str) else content
        self.files[path] = FakeFile(data, mode, owner, group)
        return self

    def content(self, path: str) -> bytes:
        return self.files[path].content

    def has(self, path: str) -> bool:
        return (
            path in self.files
            or path in self.dirs
            or any(p.startswith(path.rstrip("/") + "/") for p in self.files)
        )

    # --- views of the record -----------------------------------------------------------------

    def commands(self) -> list[list[str]]:
        """The argv of every command run, in order."""
        return [c.argv for c in self.calls if isinstance(c, Run)]

    def puts(self) -> list[Put]:
        return [c for c in self.calls if isinstance(c, Put)]

    def mutations(self) -> list[Run | Put]:
        return [c for c in self.calls if isinstance(c, Run | Put) and changes_the_lab(c)]

    # --- the Host interface --------------------------------------------------------------------

    def _record(self, event: Run | Put | Read | Exists) -> None:
        self.calls.append(event)
        self._journal.append((self.name, event))

    def run(
        self,
        argv: Sequence[str],
        *,
        root: bool = False,
        stdin: str | bytes | None = None,
        timeout: float = 600.0,
        ok_codes: Iterable[int] = (0,),
    ) -> CommandResult:
        argv = list(argv)
        accepted = tuple(ok_codes)
        self._record(Run(argv, root, stdin, timeout, accepted))
        script = self._script.get(tuple(argv))
        if not script:
            line = command_line(argv, root=root)
            self._unexpected.append(f"{self.name}: unscripted command `{line}`")
            raise Unscripted(f"{self.name}: unscripted command `{line}`")
        answer = script.pop(0) if len(script) > 1 else script[0]
        reply = answer if isinstance(answer, Reply) else answer(self, argv, stdin)
        if reply.raises is not None:
            raise reply.raises
        if reply.effect is not None:
            reply.effect(self)
        if reply.exit_code not in accepted:
            raise CommandFailed(
                self.name,
                command_line(argv, root=root),
                reply.exit_code,
                reply.stdout,
                reply.stderr,
            )
        return CommandResult(reply.exit_code, reply.stdout, reply.stderr)

    def put(
        self,
        path: str,
        content: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
        root: bool = True,
    ) -> None:
        self._record(Put(path, content, mode, owner, group))
        self.files[path] = FakeFile(content, mode, owner or "root", group or "root")

    def read(self, path: str, *, root: bool = False) -> bytes:
        self._record(Read(path, root))
        return self._content_or_fail(path, root)

    def exists(self, path: str, *, root: bool = False) -> bool:
        self._record(Exists(path, root))
        return self.has(path)

    def _content_or_fail(self, path: str, root: bool) -> bytes:
        if path not in self.files:
            raise CommandFailed(
                self.name,
                command_line(["cat", path], root=root),
                1,
                "",
                f"cat: {path}: No such file or directory",
            )
        return self.files[path].content

    def close(self) -> None:
        pass


# Responders that answer coreutils commands from the host's file tree, so that what a test sees
# after a Put is what the Put wrote. Registered per path: `host.on(["sha256sum", p], sha256sum)`.


def sha256sum(host: FakeHost, argv: list[str], stdin: str | bytes | None) -> Reply:
    path = argv[-1]
    if path not in host.files:
        return Reply(1, "", f"sha256sum: {path}: No such file or directory\n")
    return Reply(0, f"{hashlib.sha256(host.files[path].content).hexdigest()}  {path}\n")


def stat_mode_owner(host: FakeHost, argv: list[str], stdin: str | bytes | None) -> Reply:
    """`stat -c '%a %U %G' PATH`."""
    assert argv[1:3] == ["-c", "%a %U %G"], argv
    path = argv[-1]
    if path not in host.files:
        return Reply(1, "", f"stat: cannot statx '{path}': No such file or directory\n")
    f = host.files[path]
    return Reply(0, f"{f.mode:o} {f.owner} {f.group}\n")


def ls_1(host: FakeHost, argv: list[str], stdin: str | bytes | None) -> Reply:
    """`ls -1 DIR`: the names directly in DIR."""
    folder = argv[-1].rstrip("/")
    inside = [p[len(folder) + 1 :] for p in host.files if p.startswith(folder + "/")]
    return Reply(0, "".join(f"{n}\n" for n in sorted({p.split("/")[0] for p in inside})))


def rm_f(host: FakeHost, argv: list[str], stdin: str | bytes | None) -> Reply:
    assert argv[:2] == ["rm", "-f"], argv
    for path in argv[2:]:
        host.files.pop(path, None)
    return Reply()


def chmod(host: FakeHost, argv: list[str], stdin: str | bytes | None) -> Reply:
    mode, path = argv[1], argv[2]
    if path not in host.files:
        return Reply(1, "", f"chmod: cannot access '{path}': No such file or directory\n")
    host.files[path].mode = int(mode, 8)
    return Reply()


def reads_only(argv: Sequence[str]) -> bool:
    """Whether a command the actions run only looks at the lab."""
    words = list(argv)
    if words[0] in {"true", "test", "ls", "sha256sum", "stat", "ssh-keyscan", "cat"}:
        return True
    if words[:3] in (["puppet", "infrastructure", "status"], ["puppet", "config", "print"]):
        return True
    return words[0] == "git" and any(w in {"ls-remote", "rev-parse"} for w in words)


def changes_the_lab(event: Event) -> bool:
    if isinstance(event, Put):
        return True
    if isinstance(event, Run):
        return not reads_only(event.argv)
    if isinstance(event, Vagrant):
        return event.verb not in {"status", "state", "boxes"}
    if isinstance(event, Http):
        return event.method != "GET" and not event.url.endswith(
            "/rbac-api/v2/auth/token/authenticate"
        )
    if isinstance(event, LabCall):
        return event.name == "forget_host"
    return False


# --- vagrant -----------------------------------------------------------------------------------


class FakeVagrant:
    """The lab's VMs as vagrant sees them: a state per VM and the installed boxes."""

    root = "/fake/vagrant-project"

    def __init__(self, vms: Iterable[str], journal: Journal) -> None:
        self.states: dict[str, str] = dict.fromkeys(vms, "running")
        self.installed: list[tuple[str, str | None]] = []
        self.failures: dict[str, BaseException] = {}
        self.calls: list[Vagrant] = []
        self._journal = journal

    def fail(self, verb: str, error: BaseException) -> None:
        """The next call of `verb` raises `error` (and leaves the states as they were)."""
        self.failures[verb] = error

    def _record(self, verb: str, *args: str) -> None:
        event = Vagrant(verb, args)
        self.calls.append(event)
        self._journal.append(("vagrant", event))
        error = self.failures.pop(verb, None)
        if error is not None:
            raise error

    def status(self) -> dict[str, str]:
        self._record("status")
        return dict(self.states)

    def state(self, vm: str) -> str:
        self._record("state", vm)
        if vm not in self.states:
            raise ConfigError(f"{vm} is not a machine of the Vagrantfile in {self.root}")
        return self.states[vm]

    def up(self, vm: str, *, primary: str | None = None) -> None:
        self._record("up", vm)
        self.primary_given = primary  # PE_DR_PRIMARY for the Vagrantfile
        self.states[vm] = "running"

    def halt(self, vm: str, *, force: bool = False) -> None:
        self._record("halt", vm, *(["--force"] if force else []))
        self.states[vm] = "poweroff"

    def destroy(self, vm: str) -> None:
        self._record("destroy", vm)
        self.states[vm] = "not_created"

    def boxes(self) -> list[tuple[str, str | None]]:
        self._record("boxes")
        return list(self.installed)

    def box_add(self, name: str, provider: str = "virtualbox") -> None:
        self._record("box_add", name, provider)
        self.installed.append((name, provider))

    def mutations(self) -> list[Vagrant]:
        return [c for c in self.calls if changes_the_lab(c)]


# --- HTTP (PE and GitLab) ---------------------------------------------------------------------

HttpAnswer = httpx.Response | Callable[[httpx.Request], httpx.Response] | BaseException


class FakeHTTP:
    """Routes (method, URL without query) to scripted answers; records every request."""

    def __init__(self, journal: Journal, unexpected: list[str]) -> None:
        self.routes: dict[tuple[str, str], list[HttpAnswer]] = {}
        self.requests: list[Http] = []
        self._journal = journal
        self._unexpected = unexpected

    def on(
        self,
        method: str,
        url: str,
        *answers: HttpAnswer,
        json: Any = None,
        status: int = 200,
        text: str | None = None,
    ) -> FakeHTTP:
        """Answer `method url` in order (the last answer repeats); without answers, one response
        of `status` with the `json` (or `text`) body."""
        if not answers:
            if text is not None:
                answers = (httpx.Response(status, text=text),)
            else:
                answers = (httpx.Response(status, json=json),)
        self.routes[(method, url)] = list(answers)
        return self

    def on_pe_error(self, method: str, url: str, status: int, kind: str, msg: str) -> FakeHTTP:
        """Answer `method url` as PE answers an error: `status`, its `kind` and `msg` in JSON."""
        return self.on(method, url, json={"kind": kind, "msg": msg}, status=status)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        url = str(request.url.copy_with(query=None))
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content.decode()
        params = dict(request.url.params)
        event = Http(request.method, url, body, params, request)
        self.requests.append(event)
        self._journal.append(("http", event))
        answers = self.routes.get((request.method, url))
        if not answers:
            self._unexpected.append(f"unscripted request {request.method} {url}")
            raise Unscripted(f"unscripted request {request.method} {url}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        # a fresh response each time: one scripted answer may serve several requests
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def mutations(self) -> list[Http]:
        return [r for r in self.requests if changes_the_lab(r)]


def refused(url: str) -> httpx.ConnectError:
    """What httpx raises when nothing listens on the port (a halted VM, a stopped service)."""
    return httpx.ConnectError("[Errno 111] Connection refused", request=httpx.Request("GET", url))


# --- time ----------------------------------------------------------------------------------------


class FakeClock:
    """Stands in for the `time` module of pe_dr.actions and pe_dr.polling: sleeping advances it,
    so polls with deadlines run instantly and no test waits on real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


# --- small builders --------------------------------------------------------------------------


def pem(name: str) -> bytes:
    """A PEM block standing in for a certificate (the actions only split and compare them)."""
    body = hashlib.sha256(name.encode()).hexdigest()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def infra_status(*entries: tuple[str, str, str]) -> str:
    """`puppet infrastructure status --format=json` output for (service, server, state) rows."""
    return json.dumps(
        [
            {
                "service": service,
                "display_name": service,
                "server": server,
                "state": state,
                "url": f"https://{server}:8140/",
                "type": service,
                "alerts": [],
            }
            for service, server, state in entries
        ],
        indent=2,
    )
