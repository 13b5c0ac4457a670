"""Error classes: every failure is either transient (worth a retry) or permanent (fail fast).

Messages are one sentence meant for a PE admin and never carry a secret.
"""

from __future__ import annotations

import socket


class PeDrError(Exception):
    """Base error; `transient` tells the retry machinery whether another attempt can help."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect keeps a failed step's exception on result storage (a Retry, perhaps on another
        # worker, reads it back); subclasses whose __init__ takes other arguments than their
        # message would not rebuild from pickle's default of calling it with `args`.
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


def _rebuilt(cls: type[PeDrError], args: tuple[object, ...], state: dict[str, object]) -> PeDrError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class TransientError(PeDrError):
    """The lab is in motion (a VM booting, a service starting, a lock held): retry."""

    transient = True


class PermanentError(PeDrError):
    """Retrying cannot help (bad credentials, bad configuration, a precondition not met)."""

    transient = False


class ConfigError(PermanentError):
    """The lab spec, the environment or the command line is wrong (exit code 2)."""


class PreconditionError(PermanentError):
    """The lab is not in the state this step needs."""


class CheckFailed(PermanentError):
    """A drill check saw something other than what a working DR setup shows."""


class VagrantError(PeDrError):
    """A vagrant command failed; the message carries vagrant's own stderr."""

    def __init__(self, message: str, *, stderr: str = "", transient: bool | None = None) -> None:
        super().__init__(message, transient=transient)
        self.stderr = stderr


class CommandFailed(PeDrError):
    """A command on a lab host exited with a code the caller did not accept."""

    transient = True

    def __init__(
        self,
        host: str,
        command: str,
        exit_code: int,
        stdout: str = "",
        stderr: str = "",
        *,
        transient: bool | None = None,
    ) -> None:
        lines = [line.strip() for line in (stderr.strip() or stdout.strip()).splitlines()]
        # Tools put the cause on an "Error:"/"fatal:" line; later lines are often advice.
        flagged = [line for line in lines if line.lower().startswith(("error", "fatal"))]
        last = (flagged or lines or ["no output"])[-1]
        super().__init__(
            f"`{command}` on {host} exited with {exit_code}: {last}", transient=transient
        )
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class ApiError(PeDrError):
    """An HTTP API answered with an error status; 5xx and 429 are transient, the rest permanent."""

    def __init__(self, service: str, status: int, message: str, *, kind: str | None = None) -> None:
        super().__init__(
            f"{service} answered HTTP {status}: {message}", transient=status >= 500 or status == 429
        )
        self.service = service
        self.status = status
        self.kind = kind


def is_transient(exc: BaseException) -> bool:
    """True when another attempt may succeed: our own classification first, then the network's."""
    if isinstance(exc, PeDrError):
        return exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, EOFError)):
        return True
    name = type(exc).__name__
    # paramiko and httpx transport errors, without importing either here
    return name in {"SSHException", "NoValidConnectionsError", "ChannelException"} or (
        type(exc).__module__.startswith("httpx") and "Error" in name and "Status" not in name
    )


class CalledOff(PermanentError):
    """The run was called off before it acted on the lab (its approval was rejected or never
    given): nothing was halted or destroyed, and the run ends Cancelled with this reason."""
