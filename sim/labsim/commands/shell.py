"""A command line received over SSH: parsed as bash would, `sudo` honoured, then dispatched to the
program that handles it (the contract's command table, docs/lab-contract.md)."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labsim.commands import (
    coreutils,
    curl,
    gitlab,
    puppet,
    puppet_access,
    puppet_code,
    puppet_infra,
    ssh_git,
)
from labsim.commands.base import (
    METACHARS,
    PE_BIN_PREFIXES,
    SYS_PREFIXES,
    Ctx,
    Result,
    _not_found,
)

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


async def run(lab: Lab, vm: VM, user: str, line: str, process: Any) -> Result:
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        res = Result(2, "", f"bash: -c: line 1: syntax error: {exc}\n", "ssh.exec", "failed")
        lab.journal(vm.name, "ssh.exec", "failed", line)
        return res
    home = "/root" if user == "root" else f"/home/{user}"
    ctx = Ctx(lab, vm, user, False, home, home, process, line)
    if lab.fault("ssh.exec", vm.name, line):
        return Result(255, "", "Connection to host closed by remote host.\n")
    from labsim.lab import EXEC_FAULTS

    pending: dict[str, list[str]] = {vm.name: []}
    token = EXEC_FAULTS.set(pending)
    try:
        res = await _dispatch(ctx, argv)
    finally:
        EXEC_FAULTS.reset(token)
    if pending[vm.name]:
        res.outcome = "fault"
        res.op = res.op or pending[vm.name][0]
    outcome = res.outcome or (
        "ok" if res.rc == 0 or (res.op == "puppet.agent" and res.rc == 2) else "failed"
    )
    lab.journal(vm.name, res.op or "ssh.exec", outcome, line)
    return res


def _strip_prog(name: str) -> str:
    for p in PE_BIN_PREFIXES + SYS_PREFIXES:
        if name.startswith(p):
            return name[len(p) :]
    return name


async def _dispatch(ctx: Ctx, argv: list[str]) -> Result:
    if not argv:
        return Result(0)
    if any(tok in METACHARS for tok in argv):
        return Result(2, "", "labsim: pipes and redirections are not supported in exec\n")
    if argv[0] == "sudo" or argv[0] == "/usr/bin/sudo":
        return await _sudo(ctx, argv[1:])
    return await _exec(ctx, argv)


async def _sudo(ctx: Ctx, args: list[str]) -> Result:
    login = False
    target = "root"
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "--":
            i += 1
            break
        if a in ("-u",):
            target = args[i + 1]
            i += 2
            continue
        if a.startswith("-") and not a.startswith("--"):
            if "i" in a:
                login = True
            bad = set(a[1:]) - set("niEHS")
            if bad:
                return Result(1, "", f"sudo: invalid option -- '{sorted(bad)[0]}'\n")
        i += 1
    rest = args[i:]
    if ctx.user not in ("vagrant", "root"):
        return Result(
            1,
            "",
            f"{ctx.user} is not in the sudoers file.  This incident will be reported.\n",
            outcome="refused",
        )
    if target != "root":
        return Result(1, "", f"sudo: unknown user {target}\n")
    if not rest:
        return Result(1, "", "labsim: interactive root shells are not supported\n")
    ctx.user = "root"
    ctx.login = login
    ctx.home = "/root"
    if login:
        ctx.cwd = "/root"
    ctx.extra["sudo"] = True
    return await _exec(ctx, rest)


@dataclass(frozen=True)
class Program:
    """A program a VM can run: its handler, and where it is installed."""

    handler: Callable[[Ctx, list[str]], Awaitable[Result]]
    where: str = "any"  # any | pe (a VM with Puppet installed) | gitlab (gitlab.vm, root only)


PROGRAMS: dict[str, Program] = {
    "true": Program(coreutils.c_true),
    "echo": Program(coreutils.c_echo),
    "hostname": Program(coreutils.c_hostname),
    "whoami": Program(coreutils.c_whoami),
    "id": Program(coreutils.c_id),
    "cat": Program(coreutils.c_cat),
    "test": Program(coreutils.c_test),
    "mkdir": Program(coreutils.c_mkdir),
    "install": Program(coreutils.c_install),
    "rm": Program(coreutils.c_rm),
    "stat": Program(coreutils.c_stat),
    "sha256sum": Program(coreutils.c_sha256sum),
    "chmod": Program(coreutils.c_chmod),
    "chown": Program(coreutils.c_chown),
    "ls": Program(coreutils.c_ls),
    "curl": Program(curl.c_curl),
    "ssh-keygen": Program(ssh_git.c_ssh_keygen),
    "ssh-keyscan": Program(ssh_git.c_ssh_keyscan),
    "git": Program(ssh_git.c_git),
    "puppet": Program(puppet.puppet, "pe"),
    "puppet-code": Program(puppet_code.puppet_code, "pe"),
    "puppet-access": Program(puppet_access.puppet_access, "pe"),
    "puppet-infrastructure": Program(puppet_infra.puppet_infra, "pe"),
    "puppetserver": Program(puppet_infra.puppetserver_ca, "pe"),
    "gitlab-rails": Program(gitlab.gitlab_rails, "gitlab"),
    "gitlab-ctl": Program(gitlab.gitlab_ctl, "gitlab"),
}


async def _exec(ctx: Ctx, argv: list[str]) -> Result:
    raw = argv[0]
    prog = _strip_prog(raw)
    program = PROGRAMS.get(prog)
    vm = ctx.vm
    if program is None:
        return _not_found(ctx, raw)
    if program.where == "pe":
        pe_installed = vm.installed and vm.role in ("primary", "replica", "agent")
        # PE's profile.d puts /opt/puppetlabs/bin on PATH in a login shell; sudo keeps secure_path
        on_path = raw != prog or ctx.login or ctx.extra.get("sudo")
        if not pe_installed or not on_path:
            return _not_found(ctx, raw)
    elif program.where == "gitlab":
        if vm.role != "gitlab" or not vm.installed:
            return _not_found(ctx, raw)
        if not ctx.root:
            return Result(1, "", f"{prog}: must be run as root\n", "gitlab." + prog, "refused")
    return await program.handler(ctx, argv[1:])
