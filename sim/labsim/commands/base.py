"""What every labsim command shares: its result, its context (who runs it, where, in which login),
and the option and token helpers of PE's client tools."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

import asyncssh

from labsim import http

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


PE_BIN_PREFIXES = ("/opt/puppetlabs/bin/", "/opt/puppetlabs/puppet/bin/", "/usr/local/bin/")
SYS_PREFIXES = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/")
METACHARS = ("|", ">", "<", ";", "&&", "||", "`", "$(")


@dataclass
class Result:
    rc: int
    out: str = ""
    err: str = ""
    op: str = ""
    outcome: str = ""


@dataclass
class Ctx:
    lab: Lab
    vm: VM
    user: str
    login: bool
    home: str
    cwd: str
    process: Any
    line: str

    def injected(self, op: str, err: str, out: str = "", rc: int = 1) -> Result | None:
        """What the command answers when a fault fails `op` here (labsim/faults.py), else None."""
        if self.lab.fault(op, self.vm.name, self.line):
            return Result(rc, out, err, op, "fault")
        return None

    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> bool:
        return self.user == "root"

    async def read_line(self, timeout: float = 10.0) -> str | None:
        try:
            data = await asyncio.wait_for(self.process.stdin.readline(), timeout)
        except (TimeoutError, asyncssh.Error, OSError):
            return None
        if isinstance(data, bytes):
            data = data.decode(errors="replace")
        return data.rstrip("\r\n") if data else None


def _not_found(ctx: Ctx, raw: str) -> Result:
    if ctx.extra.get("sudo") and not ctx.login:
        return Result(1, "", f"sudo: {raw}: command not found\n", "ssh.exec")
    if ctx.login:
        return Result(127, "", f"-bash: line 1: {raw}: command not found\n", "ssh.exec")
    return Result(127, "", f"bash: line 1: {raw}: command not found\n", "ssh.exec")


def _denied(prog: str, what: str) -> Result:
    return Result(1, "", f"{prog}: {what}: Permission denied\n", outcome="refused")


def _opt(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _read_token(ctx: Ctx, path: str | None) -> str | None:
    p = path or f"{ctx.home}/.puppetlabs/token"
    fs = ctx.vm.fs
    if not fs.can_read(ctx.user, fs.norm(p, ctx.cwd)):
        return None
    text = fs.read_text(fs.norm(p, ctx.cwd))
    return text.strip() if text else None


def _url_host(url: str) -> tuple[str, int | None]:
    m = re.match(r"https?://([^/:]+)(?::(\d+))?", url)
    if not m:
        return url, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


async def to_server(
    lab: Lab, target: VM, port: int, method: str, path: str, **options: Unpack[http.Options]
) -> tuple[int, bytes]:
    """A request of a PE client tool (or the agent) to a PE service on `target`, verified against
    the lab's CA."""
    options["server_name"], options["ssl_ctx"] = target.name, lab.client_ssl()
    return await http.request(target.address, port, method, path, **options)
