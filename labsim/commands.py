"""Commands executed over SSH on a VM (the contract's command table)."""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import stat as statmod
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from labsim import http, pki
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import VM, Lab

PE_BIN_PREFIXES = ("/opt/puppetlabs/bin/", "/opt/puppetlabs/puppet/bin/", "/usr/local/bin/")
SYS_PREFIXES = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/")
PE_COMMANDS = {"puppet", "puppet-code", "puppet-access", "puppet-infrastructure"}
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


async def _exec(ctx: Ctx, argv: list[str]) -> Result:
    raw = argv[0]
    prog = _strip_prog(raw)
    fullpath = raw != prog
    vm = ctx.vm
    if prog in PE_COMMANDS:
        pe_installed = vm.installed and vm.role in ("primary", "replica", "agent")
        on_path = fullpath or ctx.login or ctx.extra.get("sudo")
        if not pe_installed or not on_path:
            return _not_found(ctx, raw)
        if prog == "puppet-code":
            return await puppet_code(ctx, argv[1:])
        if prog == "puppet-access":
            return await puppet_access(ctx, ["access", *argv[1:]][1:])
        if prog == "puppet-infrastructure":
            return await puppet_infra(ctx, argv[1:])
        return await puppet(ctx, argv[1:])
    if prog in ("gitlab-rails", "gitlab-ctl"):
        if vm.role != "gitlab" or not vm.installed:
            return _not_found(ctx, raw)
        if not ctx.root:
            return Result(1, "", f"{prog}: must be run as root\n", "gitlab." + prog, "refused")
        if prog == "gitlab-rails":
            return await gitlab_rails(ctx, argv[1:])
        return await gitlab_ctl(ctx, argv[1:])
    handler = FILE_COMMANDS.get(prog)
    if handler is not None:
        return await handler(ctx, argv[1:])
    return _not_found(ctx, raw)


def _not_found(ctx: Ctx, raw: str) -> Result:
    if ctx.extra.get("sudo") and not ctx.login:
        return Result(1, "", f"sudo: {raw}: command not found\n", "ssh.exec")
    if ctx.login:
        return Result(127, "", f"-bash: line 1: {raw}: command not found\n", "ssh.exec")
    return Result(127, "", f"bash: line 1: {raw}: command not found\n", "ssh.exec")


# ---------------------------------------------------------------------------------------------
# file commands


def _denied(prog: str, what: str) -> Result:
    return Result(1, "", f"{prog}: {what}: Permission denied\n", outcome="refused")


async def c_true(ctx: Ctx, args: list[str]) -> Result:
    return Result(0)


async def c_echo(ctx: Ctx, args: list[str]) -> Result:
    return Result(0, " ".join(args) + "\n")


async def c_hostname(ctx: Ctx, args: list[str]) -> Result:
    return Result(0, (ctx.vm.name if "-f" in args else ctx.vm.short) + "\n")


async def c_whoami(ctx: Ctx, args: list[str]) -> Result:
    return Result(0, ctx.user + "\n")


async def c_id(ctx: Ctx, args: list[str]) -> Result:
    uid = 0 if ctx.root else 1000
    if "-u" in args:
        return Result(0, f"{uid}\n")
    return Result(0, f"uid={uid}({ctx.user}) gid={uid}({ctx.user}) groups={uid}({ctx.user})\n")


async def c_cat(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    out, err, rc = [], [], 0
    for p in args:
        hp = fs.host(p, ctx.cwd)
        if not fs.can_read(ctx.user, fs.norm(p, ctx.cwd)):
            err.append(f"cat: {p}: Permission denied\n")
            rc = 1
        elif hp.is_dir():
            err.append(f"cat: {p}: Is a directory\n")
            rc = 1
        elif not hp.exists():
            err.append(f"cat: {p}: No such file or directory\n")
            rc = 1
        else:
            out.append(hp.read_bytes().decode(errors="replace"))
    return Result(rc, "".join(out), "".join(err), "file.cat")


async def c_test(ctx: Ctx, args: list[str]) -> Result:
    if len(args) != 2:
        return Result(2, "", "test: unsupported expression\n")
    flag, p = args
    fs = ctx.vm.fs
    vpath = fs.norm(p, ctx.cwd)
    if not ctx.root and (vpath.startswith("/root/") or vpath == "/root/"):
        return Result(1, op="file.test")
    hp = fs.host(p, ctx.cwd)
    checks = {
        "-e": hp.exists(),
        "-f": hp.is_file(),
        "-d": hp.is_dir(),
        "-s": hp.is_file() and hp.stat().st_size > 0,
        "-r": hp.exists() and fs.can_read(ctx.user, vpath),
        "-L": hp.is_symlink(),
    }
    if flag not in checks:
        return Result(2, "", f"test: {flag}: unary operator expected\n")
    return Result(0 if checks[flag] else 1, op="file.test")


async def c_mkdir(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    parents = False
    mode: int | None = None
    paths = []
    it = iter(args)
    for a in it:
        if a in ("-p", "--parents"):
            parents = True
        elif a == "-m":
            mode = int(next(it), 8)
        elif a.startswith("-"):
            continue
        else:
            paths.append(a)
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        if not fs.can_write(ctx.user, vpath):
            return Result(
                1,
                "",
                f"mkdir: cannot create directory '{p}': Permission denied\n",
                "file.mkdir",
                "refused",
            )
        hp = fs.host(vpath)
        if hp.exists() and not parents:
            return Result(
                1, "", f"mkdir: cannot create directory '{p}': File exists\n", "file.mkdir"
            )
        if not hp.parent.exists() and not parents:
            return Result(
                1,
                "",
                f"mkdir: cannot create directory '{p}': No such file or directory\n",
                "file.mkdir",
            )
        existed = hp.exists()
        hp.mkdir(parents=True, exist_ok=True)
        if mode is not None:
            hp.chmod(mode)
        if not existed:
            fs.set_owner(vpath, ctx.user, ctx.user)
    return Result(0, op="file.mkdir")


async def c_install(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    mode, owner, group = 0o755, None, None
    make_dirs = False
    dir_mode = False
    paths = []
    it = iter(args)
    for a in it:
        if a == "-m":
            mode = int(next(it), 8)
        elif a.startswith("--mode="):
            mode = int(a.split("=", 1)[1], 8)
        elif a == "-o":
            owner = next(it)
        elif a == "-g":
            group = next(it)
        elif a == "-D":
            make_dirs = True
        elif a == "-d":
            dir_mode = True
        elif a.startswith("-"):
            continue
        else:
            paths.append(a)
    if (owner or group) and not ctx.root:
        return Result(
            1,
            "",
            "install: cannot change ownership: Operation not permitted\n",
            "file.install",
            "refused",
        )
    if dir_mode:
        for p in paths:
            vpath = fs.norm(p, ctx.cwd)
            if not fs.can_write(ctx.user, vpath):
                return Result(
                    1,
                    "",
                    f"install: cannot create directory '{p}': Permission denied\n",
                    "file.install",
                    "refused",
                )
            fs.host(vpath).mkdir(parents=True, exist_ok=True)
            fs.host(vpath).chmod(mode)
            fs.set_owner(vpath, owner or ctx.user, group or owner or ctx.user)
        return Result(0, op="file.install")
    if len(paths) != 2:
        return Result(1, "", "install: missing destination file operand\n", "file.install")
    src, dest = paths
    vsrc, vdest = fs.norm(src, ctx.cwd), fs.norm(dest, ctx.cwd)
    hsrc, hdest = fs.host(vsrc), fs.host(vdest)
    if not hsrc.exists():
        return Result(
            1, "", f"install: cannot stat '{src}': No such file or directory\n", "file.install"
        )
    if not fs.can_read(ctx.user, vsrc):
        return Result(
            1,
            "",
            f"install: cannot open '{src}' for reading: Permission denied\n",
            "file.install",
            "refused",
        )
    if hdest.is_dir():
        hdest = hdest / hsrc.name
        vdest = fs.vm_path(hdest)
    if not fs.can_write(ctx.user, vdest):
        return Result(
            1,
            "",
            f"install: cannot create regular file '{dest}': Permission denied\n",
            "file.install",
            "refused",
        )
    if not hdest.parent.exists():
        if make_dirs:
            hdest.parent.mkdir(parents=True)
        else:
            return Result(
                1,
                "",
                f"install: cannot create regular file '{dest}': No such file or directory\n",
                "file.install",
            )
    if hdest.exists():
        hdest.unlink()
    shutil.copyfile(hsrc, hdest)
    hdest.chmod(mode)
    fs.set_owner(
        vdest, owner or ctx.user, group or ("root" if owner and ctx.root else owner or ctx.user)
    )
    if owner and not group:
        fs.set_owner(vdest, owner, "root")
    return Result(0, op="file.install")


async def c_rm(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    force = any(a.startswith("-") and "f" in a for a in args)
    recursive = any(a.startswith("-") and ("r" in a or "R" in a) for a in args)
    err, rc = [], 0
    for p in [a for a in args if not a.startswith("-")]:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not hp.exists() and not hp.is_symlink():
            if not force:
                err.append(f"rm: cannot remove '{p}': No such file or directory\n")
                rc = 1
            continue
        if not fs.can_write(ctx.user, vpath):
            err.append(f"rm: cannot remove '{p}': Permission denied\n")
            rc = 1
            continue
        if hp.is_dir() and not hp.is_symlink():
            if not recursive:
                err.append(f"rm: cannot remove '{p}': Is a directory\n")
                rc = 1
                continue
            shutil.rmtree(hp)
        else:
            hp.unlink()
        fs.forget(vpath)
    return Result(rc, "", "".join(err), "file.rm")


async def c_stat(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    fmt = "%n"
    paths = []
    it = iter(args)
    for a in it:
        if a in ("-c", "--format"):
            fmt = next(it)
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a.startswith("-"):
            continue
        else:
            paths.append(a)
    out, err, rc = [], [], 0
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not ctx.root and vpath.startswith("/root/"):
            err.append(f"stat: cannot statx '{p}': Permission denied\n")
            rc = 1
            continue
        try:
            st = hp.lstat()
        except OSError:
            err.append(f"stat: cannot statx '{p}': No such file or directory\n")
            rc = 1
            continue
        o, g = fs.owner(vpath)
        values = {
            "a": format(st.st_mode & 0o7777, "o"),
            "U": o,
            "G": g,
            "n": p,
            "s": str(st.st_size),
            "A": statmod.filemode(st.st_mode),
            "F": "directory" if hp.is_dir() else "regular file",
        }
        out.append(_fmt(fmt, values) + "\n")
    return Result(rc, "".join(out), "".join(err), "file.stat")


def _fmt(fmt: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"%([aUGnsAF])", sub, fmt)


async def c_sha256sum(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    out, err, rc = [], [], 0
    for p in [a for a in args if not a.startswith("-")]:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not fs.can_read(ctx.user, vpath):
            err.append(f"sha256sum: {p}: Permission denied\n")
            rc = 1
        elif not hp.is_file():
            err.append(f"sha256sum: {p}: No such file or directory\n")
            rc = 1
        else:
            out.append(f"{hashlib.sha256(hp.read_bytes()).hexdigest()}  {p}\n")
    return Result(rc, "".join(out), "".join(err), "file.sha256sum")


async def c_chmod(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    rest = [a for a in args if a not in ("-R",)]
    if len(rest) < 2:
        return Result(1, "", "chmod: missing operand\n")
    mode_s, paths = rest[0], rest[1:]
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not hp.exists():
            return Result(
                1, "", f"chmod: cannot access '{p}': No such file or directory\n", "file.chmod"
            )
        o, _ = fs.owner(vpath)
        if not ctx.root and o != ctx.user:
            return Result(
                1,
                "",
                f"chmod: changing permissions of '{p}': Operation not permitted\n",
                "file.chmod",
                "refused",
            )
        try:
            mode = int(mode_s, 8)
        except ValueError:
            mode = _symbolic(hp.stat().st_mode & 0o7777, mode_s)
        hp.chmod(mode)
    return Result(0, op="file.chmod")


def _symbolic(cur: int, spec: str) -> int:
    m = re.fullmatch(r"([ugoa]*)([+-=])([rwx]*)", spec)
    if not m:
        return cur
    who = m.group(1) or "a"
    bits = 0
    for ch in m.group(3):
        b = {"r": 4, "w": 2, "x": 1}[ch]
        for w in who:
            shifts = {"u": [6], "g": [3], "o": [0], "a": [6, 3, 0]}[w]
            for s in shifts:
                bits |= b << s
    if m.group(2) == "+":
        return cur | bits
    if m.group(2) == "-":
        return cur & ~bits
    return bits


async def c_chown(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    recursive = "-R" in args
    rest = [a for a in args if not a.startswith("-")]
    if len(rest) < 2:
        return Result(1, "", "chown: missing operand\n")
    spec, paths = rest[0], rest[1:]
    owner, _, group = spec.partition(":")
    if not ctx.root:
        return Result(
            1,
            "",
            f"chown: changing ownership of '{paths[0]}': Operation not permitted\n",
            "file.chown",
            "refused",
        )
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not hp.exists():
            return Result(
                1, "", f"chown: cannot access '{p}': No such file or directory\n", "file.chown"
            )
        targets = [vpath]
        if recursive and hp.is_dir():
            targets += [fs.vm_path(x) for x in hp.rglob("*")]
        for t in targets:
            fs.set_owner(t, owner or None, group or None)
    return Result(0, op="file.chown")


async def c_ls(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    paths = [a for a in args if not a.startswith("-")] or [ctx.cwd]
    long_ = any(a.startswith("-") and "l" in a for a in args)
    out = []
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not fs.can_read(ctx.user, vpath) or (not ctx.root and vpath.startswith("/root")):
            return Result(2, "", f"ls: cannot open directory '{p}': Permission denied\n", "file.ls")
        if not hp.exists():
            return Result(2, "", f"ls: cannot access '{p}': No such file or directory\n", "file.ls")
        entries = (
            [(".", hp), ("..", hp.parent), *sorted((x.name, x) for x in hp.iterdir())]
            if hp.is_dir()
            else [(p, hp)]
        )
        if not long_:
            out.append("".join(f"{n}\n" for n, _ in entries if n not in (".", "..")))
            continue
        out.append("total 4\n")
        for name, x in entries:
            st = x.lstat()
            o, g = fs.owner(fs.vm_path(x)) if name not in ("..",) else ("root", "root")
            t = time.strftime("%b %d %H:%M", time.localtime(st.st_mtime))
            out.append(f"{statmod.filemode(st.st_mode)} 1 {o} {g} {st.st_size:>5} {t} {name}\n")
    return Result(0, "".join(out), "", "file.ls")


# ---------------------------------------------------------------------------------------------
# ssh tooling and git


async def _subprocess(
    ctx: Ctx,
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes | None = None,
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    ctx.lab.children.add(proc.pid)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    finally:
        ctx.lab.children.discard(proc.pid)
    fs = ctx.vm.fs
    return (
        proc.returncode or 0,
        fs.strip(out.decode(errors="replace")),
        fs.strip(err.decode(errors="replace")),
    )


async def c_ssh_keygen(ctx: Ctx, args: list[str]) -> Result:
    fs = ctx.vm.fs
    mapped = list(args)
    target = None
    for i, a in enumerate(args):
        if a == "-f" and i + 1 < len(args):
            target = fs.norm(args[i + 1], ctx.cwd)
            mapped[i + 1] = str(fs.host(target))
    if target is None:
        target = f"{ctx.home}/.ssh/id_rsa"
        mapped += ["-f", str(fs.host(target))]
    if not fs.can_write(ctx.user, target):
        return Result(
            1, "", f'Saving key "{target}" failed: Permission denied\n', "ssh-keygen", "refused"
        )
    fs.host(target).parent.mkdir(parents=True, exist_ok=True)
    rc, out, err = await _subprocess(ctx, ["ssh-keygen", *mapped], stdin=b"n\n")
    if rc == 0:
        for p in (target, target + ".pub"):
            if fs.exists(p):
                fs.set_owner(p, ctx.user, ctx.user)
    return Result(rc, out, err, "ssh-keygen")


async def c_ssh_keyscan(ctx: Ctx, args: list[str]) -> Result:
    types = ["rsa", "ecdsa", "ed25519"]
    hosts = []
    it = iter(args)
    port = 22
    for a in it:
        if a == "-t":
            types = next(it).split(",")
        elif a == "-p":
            port = int(next(it))
        elif a.startswith("-"):
            continue
        else:
            hosts.append(a)
    out, err = [], []
    rc = 0
    for h in hosts:
        vm = ctx.lab.vm_by_host(h)
        if vm is None:
            err.append(f"getaddrinfo {h}: Name or service not known\n")
            rc = 1
            continue
        if vm.ssh_server is None or (port != vm.ssh_port and port != 22):
            rc = 1
            continue
        for t in types:
            alg = {"rsa": "ssh-rsa", "ed25519": "ssh-ed25519"}.get(t, t)
            for k in vm.host_keys:
                if k.algorithm.decode() == alg or (
                    alg == "ssh-rsa" and k.algorithm.decode().startswith("rsa")
                ):
                    pub = k.export_public_key("openssh").decode().split()
                    err.append(f"# {h}:{vm.ssh_port} SSH-2.0-AsyncSSH_{asyncssh.__version__}\n")
                    out.append(f"{h} {pub[0]} {pub[1]}\n")
    return Result(rc, "".join(out), "".join(err), "ssh-keyscan")


async def c_git(ctx: Ctx, args: list[str]) -> Result:
    lab, fs = ctx.lab, ctx.vm.fs
    cwd = ctx.cwd
    gitargs: list[str] = []
    ssh_cmd: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-C":
            cwd = fs.norm(args[i + 1], cwd)
            i += 2
            continue
        if a == "-c" and i + 1 < len(args):
            key, _, val = args[i + 1].partition("=")
            if key.lower() == "core.sshcommand":
                ssh_cmd = val
            else:
                gitargs += ["-c", args[i + 1]]
            i += 2
            continue
        break
    sub = args[i:]
    gitargs += sub
    sub0 = sub[0] if sub else ""
    if not fs.host(cwd).is_dir():
        return Result(
            128, "", f"fatal: cannot change to '{cwd}': No such file or directory\n", "git"
        )
    if sub0 in ("init", "add", "commit", "remote", "checkout") and not fs.can_write(ctx.user, cwd):
        return Result(
            128,
            "",
            f"fatal: could not create work tree dir '{cwd}': Permission denied\n",
            "git",
            "refused",
        )
    env = {
        "HOME": str(fs.host(ctx.home)),
        "PATH": "/usr/bin:/bin",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
    }
    op = "git"
    if sub0 in ("push", "fetch", "ls-remote", "pull", "clone"):
        op = "git.push" if sub0 == "push" else "git.fetch"
        if lab.fault(op, ctx.vm.name, ctx.line):
            return Result(
                128,
                "",
                "ssh: connect to host gitlab.vm port 22: Connection timed out\n"
                "fatal: Could not read from remote repository.\n\n"
                "Please make sure you have the correct access rights\n"
                "and the repository exists.\n",
                op,
                "fault",
            )
        env["GIT_SSH_COMMAND"] = _ssh_command(ctx, ssh_cmd)
    rc, out, err = await _subprocess(ctx, ["git", *gitargs], env=env, cwd=str(fs.host(cwd)))
    err = err.replace(str(lab.dir), "")
    if rc == 0 and sub0 in ("init", "add", "commit", "clone"):
        base = fs.host(cwd)
        if sub0 == "init" and not fs.owners.get(cwd):
            fs.set_owner(cwd, ctx.user, ctx.user)
        _ = base
    return Result(rc, out, err, op)


def _ssh_command(ctx: Ctx, ssh_cmd: str | None) -> str:
    """Map an `ssh -i KEY -o …` command of the VM to the real ssh client with mapped paths."""
    fs = ctx.vm.fs
    gl = ctx.lab.role_vm("gitlab")
    argv = shlex.split(ssh_cmd) if ssh_cmd else ["ssh"]
    out = ["/usr/bin/ssh", "-F", "/dev/null"]
    known = f"{ctx.home}/.ssh/known_hosts"
    strict = "ask"
    keys = []
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "-i":
            keys.append(argv[i + 1])
            i += 2
            continue
        if a == "-o":
            k, _, v = argv[i + 1].partition("=")
            if k.lower() == "userknownhostsfile":
                known = v
            elif k.lower() == "stricthostkeychecking":
                strict = v
            else:
                out += ["-o", argv[i + 1]]
            i += 2
            continue
        out.append(a)
        i += 1
    if not keys:
        keys = [f"{ctx.home}/.ssh/id_rsa", f"{ctx.home}/.ssh/id_ed25519"]
    for k in keys:
        out += ["-i", str(fs.host(k, ctx.cwd))]
    known_host = str(fs.host(known, ctx.cwd)) if known != "/dev/null" else "/dev/null"
    out += [
        "-o",
        f"UserKnownHostsFile={known_host}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"StrictHostKeyChecking={'yes' if strict == 'ask' else strict}",
        "-o",
        f"HostKeyAlias={gl.name}",
        "-o",
        f"HostName={gl.address}",
        "-o",
        f"Port={gl.ssh_port}",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
    ]
    return shlex.join(out)


# ---------------------------------------------------------------------------------------------
# GitLab commands


async def gitlab_rails(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "gitlab.rails-runner"
    if len(args) < 2 or args[0] != "runner":
        return Result(
            1, "", "Usage: rails runner [options] [<'Some.ruby(code)'> | <filename.rb>]\n", op
        )
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1, "", "Error: PG::ConnectionBad: connection to server failed (injected)\n", op, "fault"
        )
    src = args[1]
    fs = ctx.vm.fs
    code = fs.read_text(src) if src.endswith(".rb") or src.startswith("/") else src
    if code is None:
        return Result(
            1,
            "",
            f"Please specify a valid ruby command or the path of a script to run.\n"
            f"Run 'rails runner -h' for help.\n\ncannot load such file -- {src}\n",
            op,
        )
    await lab.sleep(lab.dur("rails-runner"))
    gl = lab.gitlab
    assert gl is not None
    m_user = re.search(r"find_by_username\(['\"](\w+)['\"]\)", code)
    m_file = re.search(r"set_token\(\s*File\.read\(['\"]([^'\"]+)['\"]\)", code)
    m_lit = re.search(r"set_token\(['\"]([^'\"]+)['\"]\)", code)
    if not m_user or m_user.group(1) != "root" or not (m_file or m_lit):
        return Result(
            1, "", "labsim: gitlab-rails runner only models the PAT bootstrap script\n", op
        )
    if "personal_access_tokens" not in code or "api" not in code:
        return Result(1, "", "labsim: the script does not create an api-scoped token\n", op)
    if m_file:
        text = fs.read_text(m_file.group(1))
        if text is None:
            return Result(
                1,
                "",
                f"{src}:3:in `read': No such file or directory @ rb_sysopen - "
                f"{m_file.group(1)} (Errno::ENOENT)\n",
                op,
            )
        token = text.strip()
    else:
        assert m_lit
        token = m_lit.group(1)
    if len(token) < 20:
        return Result(
            1, "", "ActiveRecord::RecordInvalid: Validation failed: Token is too short\n", op
        )
    gl.pats[token] = 1
    return Result(0, "", "", op)


async def gitlab_ctl(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    if not args or args[0] not in ("reconfigure", "status", "restart"):
        return Result(1, "", f"I don't know that command: {' '.join(args)}\n", "gitlab.ctl")
    if args[0] == "reconfigure":
        await lab.sleep(lab.dur("reconfigure"))
        gl = lab.gitlab
        assert gl is not None
        # Omnibus links one certificate per file of trusted-certs into GitLab's store; several
        # releases skip a file that holds more than one (omnibus-gitlab MRs !8306, !8711;
        # real-world-findings §1 row 2), so a CA bundle in one file is not trusted at all.
        d = ctx.vm.fs.host("/etc/gitlab/trusted-certs")
        gl.trusted_cas, skipped = [], []
        for path in sorted(d.iterdir()) if d.exists() else []:
            certs = pki.split_pem(path.read_text(errors="replace"))
            if len(certs) == 1:
                gl.trusted_cas.append(certs[0])
            else:
                skipped.append(path.name)
        notes = "".join(
            f"  * Skipping /etc/gitlab/trusted-certs/{name}: it does not hold exactly one "
            "certificate\n"
            for name in skipped
        )
        return Result(
            0,
            notes + "Running handlers:\nRunning handlers complete\n"
            "Infra Phase complete, 0/812 resources updated in 12 seconds\n"
            "gitlab Reconfigured!\n",
            "",
            "gitlab.reconfigure",
        )
    return Result(
        0, "run: gitlab-workhorse: (pid 1234) 100s; run: log: (pid 1200) 100s\n", "", "gitlab.ctl"
    )


# ---------------------------------------------------------------------------------------------
# puppet


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


CLIENT_TOOLS = "/etc/puppetlabs/client-tools"


def write_client_tools(fs: Any, primary: str) -> None:
    """PE's global client-tools configuration on a PE-managed host, naming the primary it was
    installed against (help.puppet.com: "Configuring and using PE client tools",
    "Configure puppet-access", "Installing and configuring puppet-code"). Promotion does not
    rewrite it: PE's procedure tells the admin to update what points at the old primary
    (PE 2019.7-2021.7 dr_configure, "Promote a replica", step 3)."""
    ca = "/etc/puppetlabs/puppet/ssl/certs/ca.pem"
    confs = {
        "puppet-access.conf": {
            "service-url": f"https://{primary}:4433/rbac-api",
            "token-file": "~/.puppetlabs/token",
            "certificate-file": ca,
        },
        "puppet-code.conf": {
            "cacert": ca,
            "token-file": "~/.puppetlabs/token",
            "service-url": f"https://{primary}:8170/code-manager",
        },
        "orchestrator.conf": {"options": {"service-url": f"https://{primary}:8143"}},
    }
    for name, body in confs.items():
        fs.write(f"{CLIENT_TOOLS}/{name}", json.dumps(body, indent=2) + "\n", 0o644)


def _service_url(ctx: Ctx, conf: str, flag: str | None) -> str | None:
    """The service URL a client tool uses: --service-url, else the user's
    ~/.puppetlabs/client-tools/<conf>, else the global one."""
    if flag:
        return flag
    fs = ctx.vm.fs
    for path in (f"{ctx.home}/.puppetlabs/client-tools/{conf}", f"{CLIENT_TOOLS}/{conf}"):
        text = fs.read_text(path) if fs.can_read(ctx.user, path) else None
        if not text:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        url = data.get("service-url") or (data.get("options") or {}).get("service-url")
        if url:
            return str(url)
    return None


def _url_host(url: str) -> tuple[str, int | None]:
    m = re.match(r"https?://([^/:]+)(?::(\d+))?", url)
    if not m:
        return url, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


async def puppet(ctx: Ctx, args: list[str]) -> Result:
    if not args:
        return Result(0, "See 'puppet help' for help on available puppet subcommands\n")
    sub = args[0]
    if sub == "access":
        return await puppet_access(ctx, args[1:])
    if sub in ("infrastructure", "infra"):
        return await puppet_infra(ctx, args[1:])
    if sub == "agent":
        return await puppet_agent_cmd(ctx, args[1:])
    if sub == "config":
        return await puppet_config(ctx, args[1:])
    if sub == "job":
        return await puppet_job(ctx, args[1:])
    if sub == "code":
        return await puppet_code(ctx, args[1:])
    return Result(1, "", f"Error: Unknown Puppet subcommand '{sub}'\n", "puppet")


async def puppet_config(ctx: Ctx, args: list[str]) -> Result:
    if len(args) >= 2 and args[0] == "print":
        setting = args[1]
        section = _opt(args, "--section") or "main"
        conf = configparser.ConfigParser(interpolation=None)
        conf.read_string(ctx.vm.fs.read_text("/etc/puppetlabs/puppet/puppet.conf") or "")
        value = ""
        for sec in (section, "main"):
            if conf.has_option(sec, setting):
                value = conf.get(sec, setting)
                break
        if not value and setting == "server":
            value = "puppet"
        return Result(0, value.strip() + "\n", "", "puppet.config")
    return Result(1, "", "Error: labsim models only 'puppet config print'\n", "puppet.config")


async def puppet_access(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "puppet.access.login"
    if not args or args[0] != "login":
        if args and args[0] == "show":
            tok = _read_token(ctx, _opt(args, "--token-file", "-t"))
            return Result(
                0 if tok else 1,
                (tok + "\n") if tok else "",
                "" if tok else "Error: No token file found\n",
                "puppet.access.show",
            )
        return Result(1, "", "Error: labsim models 'puppet access login' and 'show'\n", op)
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1,
            "",
            "Error: Failed to connect to the RBAC service: 503 Service Unavailable\n",
            op,
            "fault",
        )
    user = _opt(args, "--username")
    lifetime = _opt(args, "--lifetime", "-l") or "1h"
    token_file = _opt(args, "--token-file", "-t") or f"{ctx.home}/.puppetlabs/token"
    service = _opt(args, "--service-url")
    prompt = ""
    if user is None:
        prompt += "Enter your Puppet Enterprise credentials.\nUsername: "
        user = await ctx.read_line() or ""
    if not user:
        return Result(1, prompt, "Error: No username given\n", op)
    prompt += "" if not prompt else "Password: "
    password = await ctx.read_line()
    if password is None:
        return Result(1, prompt, "Error: No password given (stdin closed)\n", op)
    service = _service_url(ctx, "puppet-access.conf", service)
    if service is None:
        return Result(
            1,
            prompt,
            "Error: No service-url for the RBAC API: pass --service-url or set it in "
            "puppet-access.conf\n",
            op,
        )
    host, port_given = _url_host(service)
    port = port_given or 4433
    target = lab.vm_by_host(host)
    if target is None:
        return Result(
            1,
            prompt,
            f"Error: Failed to connect to https://{host}:{port}/rbac-api: "
            "getaddrinfo: Name or service not known\n",
            op,
        )
    body = json.dumps(
        {
            "login": user,
            "password": password,
            "lifetime": lifetime,
            "label": f"puppet access login {uuid.uuid4().hex[:8]}",
        }
    ).encode()
    try:
        status, data = await http.request(
            target.address,
            port,
            "POST",
            "/rbac-api/v1/auth/token",
            server_name=target.name,
            ssl_ctx=lab.client_ssl(),
            headers={"Content-Type": "application/json"},
            body=body,
        )
    except OSError as exc:
        return Result(
            1,
            prompt,
            f"Error: Failed to connect to https://{target.name}:{port}/rbac-api:"
            f" {exc.strerror or exc}\n",
            op,
        )
    if status == 401:
        return Result(
            1, prompt, "Error: The provided login or password is invalid.\n", op, "refused"
        )
    if status != 200:
        return Result(1, prompt, f"Error: RBAC service answered {status}\n", op)
    token = json.loads(data)["token"]
    fs = ctx.vm.fs
    vpath = fs.norm(token_file, ctx.cwd)
    if not fs.can_write(ctx.user, vpath):
        return Result(
            1, prompt, f"Error: Permission denied @ rb_sysopen - {token_file}\n", op, "refused"
        )
    fs.host(vpath).parent.mkdir(parents=True, exist_ok=True)
    fs.write(vpath, token + "\n", 0o600, ctx.user, ctx.user)
    return Result(
        0, prompt + ("\n" if prompt else "") + f"Access token saved to: {vpath}\n", "", op
    )


async def puppet_code(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "puppet-code.deploy"
    token_file = _opt(args, "--token-file", "-t")
    service = _opt(args, "--service-url")
    rest = []
    skip = False
    for _i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in (
            "--token-file",
            "-t",
            "--service-url",
            "-c",
            "--config-file",
            "-l",
            "--log-level",
            "--cacert",
        ):
            skip = True
            continue
        rest.append(a)
    if not rest or rest[0] not in ("deploy", "status"):
        return Result(1, "", "Error: labsim models 'puppet-code deploy' and 'status'\n", op)
    if not ctx.root:
        return Result(1, "", "Error: Permission denied reading the puppet-code configuration\n", op)
    token = _read_token(ctx, token_file)
    service = _service_url(ctx, "puppet-code.conf", service)
    if service is None:
        return Result(
            1, "", "Error: No service-url: pass --service-url or set it in puppet-code.conf\n", op
        )
    host, p = _url_host(service)
    port = p or 8170
    target = lab.vm_by_host(host)
    if rest[0] == "status":
        if target and port in target.http:
            return Result(
                0,
                "Code Manager health: running\nFile Sync Storage health: running\n",
                "",
                "puppet-code.status",
            )
        return Result(
            1,
            "",
            f"Error: Failed to connect to https://{host}:{port}/code-manager: Connection refused\n",
            "puppet-code.status",
        )
    dry = "--dry-run" in rest
    wait = dry or "--wait" in rest or "-w" in rest
    envs = [a for a in rest[1:] if not a.startswith("-")]
    pre = ""
    if dry:
        pre = (
            "--dry-run implies --all.\n--dry-run implies --wait.\n"
            "Dry-run deploying all environments.\n"
        )
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1, pre, "Error: Code Manager request failed: 503 Service Unavailable\n", op, "fault"
        )
    if not token:
        return Result(
            1,
            pre,
            "Error: No token found. Run 'puppet access login' or pass --token-file.\n",
            op,
            "refused",
        )
    if target is None:
        return Result(1, pre, f"Error: Failed to connect: {host}: Name or service not known\n", op)
    body: dict[str, Any] = {"wait": wait, "dry-run": dry}
    if dry or "--all" in rest:
        body["deploy-all"] = True
    else:
        if not envs:
            return Result(1, "", "Error: Specify an environment or --all\n", op)
        body["environments"] = envs
    try:
        status, data = await http.request(
            target.address,
            port,
            "POST",
            "/code-manager/v1/deploys",
            server_name=target.name,
            ssl_ctx=lab.client_ssl(),
            headers={"Content-Type": "application/json", "X-Authentication": token},
            body=json.dumps(body).encode(),
            timeout=300,
        )
    except OSError as exc:
        return Result(
            1,
            pre,
            f"Error: Failed to connect to https://{target.name}:{port}/code-manager:"
            f" {exc.strerror or 'Connection refused'}\n",
            op,
        )
    if status in (401, 403):
        msg = json.loads(data).get("msg", "")
        env = envs[0] if envs else "production"
        text = (
            f"You are not authorized to deploy Puppet environment '{env}'\n"
            if status == 403
            else f"Error: {msg or 'The provided token is invalid or expired'}\n"
        )
        return Result(1, pre, text, op, "refused")
    if status != 200:
        return Result(1, pre, f"Error: Code Manager answered {status}: {data.decode()}\n", op)
    result = json.loads(data)
    if dry:
        return Result(
            0,
            pre
            + f"Found {len(result)} environments.\n"
            + json.dumps([{"environment": r["environment"]} for r in result])
            + "\n",
            "",
            op,
        )
    out = pre + f"Found {len(result)} environments.\n" + json.dumps(result, indent=2) + "\n"
    failed = any(r.get("status") == "failed" for r in result)
    return Result(1 if failed else 0, out, "", op)


async def puppet_job(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "puppet.job.run"
    if not args or args[0] != "run":
        return Result(1, "", "Error: labsim models 'puppet job run'\n", op)
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(1, "", "Error: Failed to connect to the orchestrator: 503\n", op, "fault")
    token = _read_token(ctx, _opt(args, "--token-file", "-t"))
    pe = lab.pe
    if pe is None or pe.token_user(token) is None:
        return Result(
            1, "", "Error: Token invalid or missing. Run 'puppet access login'\n", op, "refused"
        )
    query = _opt(args, "--query", "-q")
    nodes_opt = _opt(args, "--nodes", "-n")
    if query is None and nodes_opt is None:
        return Result(1, "", "Error: A target is required: --nodes, --query or --node-group\n", op)
    nodes = nodes_opt.split(",") if nodes_opt else list(pe.nodes)
    noop = "--noop" in args
    job = await lab.api.run_job(lab, nodes, noop, pe.token_user(token))
    lines = ["Starting job ...", f"New job ID: {job['id']}", f"Nodes: {len(job['nodes'])}", ""]
    ok = 0
    for n in job["nodes"]:
        if n["state"] == "finished":
            ok += 1
            lines.append(f"Finished on node {n['name']}")
            lines.append(f"  configuration version: {n['result']['configuration_version']}")
        else:
            lines.append(f"Failed on {n['name']}")
            lines.append(f"  {n['details']['message']}")
    lines += [
        "",
        f"Job {'completed' if ok == len(job['nodes']) else 'failed'}. "
        f"{ok}/{len(job['nodes'])} nodes succeeded.",
        "Duration: 1 sec",
    ]
    return Result(0 if ok == len(job["nodes"]) else 1, "\n".join(lines) + "\n", "", op)


# -- puppet agent -------------------------------------------------------------------------------


async def puppet_agent_cmd(ctx: Ctx, args: list[str]) -> Result:
    if "-t" not in args and "--test" not in args and "--onetime" not in args:
        return Result(1, "", "labsim: only 'puppet agent -t' is modelled\n", "puppet.agent")
    if not ctx.root:
        return Result(
            1,
            "",
            "Error: Could not run: Permission denied @ rb_sysopen - "
            "/etc/puppetlabs/puppet/ssl/private_keys\n",
            "puppet.agent",
            "refused",
        )
    noop = "--noop" in args
    override = _opt(args, "--server_list", "--server-list")
    if override is None:
        server = _opt(args, "--server")
        override = server
    rc, out, err = await agent_run(ctx.lab, ctx.vm, noop, override)
    return Result(rc, out, err, "puppet.agent")


def _server_list(vm: VM, override: str | None) -> list[tuple[str, int]]:
    text = override
    if text is None:
        conf = configparser.ConfigParser(interpolation=None)
        conf.read_string(vm.fs.read_text("/etc/puppetlabs/puppet/puppet.conf") or "")
        for sec, key in (
            ("agent", "server_list"),
            ("main", "server_list"),
            ("agent", "server"),
            ("main", "server"),
        ):
            if conf.has_option(sec, key):
                text = conf.get(sec, key)
                break
    entries = []
    for item in (text or "puppet").split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.partition(":")
        entries.append((host, int(port) if port else 8140))
    return entries


# Puppet's console log destination (lib/puppet/util/log/destinations.rb): errors and warnings on
# stderr, the rest on stdout, each line coloured even when piped (real-world-findings §2).
_COLOURS = {
    "Error": "\x1b[1;31m",
    "Warning": "\x1b[1;33m",
    "Notice": "\x1b[0m",
    "Info": "\x1b[0;32m",
}
_RESET = "\x1b[0m"


class AgentLog:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    def __call__(self, level: str, message: str) -> None:
        line = f"{_COLOURS[level]}{level}: {message}{_RESET}\n"
        (self.err if level in ("Error", "Warning") else self.out).append(line)


def _agent_setting(vm: VM, name: str, default: str) -> str:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(vm.fs.read_text("/etc/puppetlabs/puppet/puppet.conf") or "")
    for sec in ("agent", "main"):
        if conf.has_option(sec, name):
            return conf.get(sec, name)
    return default


def _seconds(value: str) -> float:
    """A Puppet duration setting: `120`, `120s`, `2m`, `1h`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdy]?)\s*", value)
    if not m:
        return 120.0
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 31536000}[m.group(2)]
    return float(m.group(1)) * unit


async def _try_server(
    lab: Lab, host: str, port: int, connect_timeout: float
) -> tuple[VM | None, int | None, str]:
    """GET /status/v1/simple/server on one server_list entry, as Puppet's resolver does
    (lib/puppet/http/resolver/server_list.rb): (the server, its HTTP status or None, why not)."""
    target = lab.vm_by_host(host)
    url = f"https://{host}:{port}/status/v1/simple/server"
    if target is None:
        return (
            None,
            None,
            f"Request to {url} failed after 0.001 seconds: Failed to open TCP connection "
            f"to {host}:{port} (getaddrinfo: Name or service not known)",
        )
    if not target.serving and lab.faults.has("halt-unreachable", target.name):
        # A powered-off VM on a host-only network: ARP gets no answer and connect(2) fails with
        # EHOSTUNREACH after about 3 s (real-world-findings §2). Modelled: loopback cannot do it.
        await lab.sleep(3.071, "puppet.agent.connect")
        return (
            target,
            None,
            f"Request to {url} failed after 3.071 seconds: Failed to open TCP connection to "
            f"{host}:{port} (No route to host - connect(2) for {target.address}:{port})",
        )
    t0 = time.monotonic()
    try:
        status, _ = await http.request(
            target.address,
            port,
            "GET",
            "/status/v1/simple/server",
            server_name=target.name,
            ssl_ctx=lab.client_ssl(),
            timeout=20,
            connect_timeout=connect_timeout * lab.scale if lab.scale else connect_timeout,
        )
    except http.ConnectTimeout:
        # accepted, never completed TLS: the agent waited its http_connect_timeout (scaled here,
        # reported in modelled seconds, as the agent would report real ones)
        elapsed = time.monotonic() - t0
        waited = elapsed / lab.scale if lab.scale else connect_timeout
        lab.record_sleep(time.time() - elapsed, time.time(), waited, "puppet.agent.connect")
        return (
            target,
            None,
            f"Request to {url} timed out connect operation after {waited:.3f} seconds",
        )
    except (OSError, TimeoutError) as exc:
        why = (
            f"Connection refused - connect(2) for {target.address}:{port}"
            if isinstance(exc, ConnectionRefusedError)
            else f"{exc.__class__.__name__}: {exc}"
        )
        return (
            target,
            None,
            f"Request to {url} failed after {time.monotonic() - t0:.3f} seconds: "
            f"Failed to open TCP connection to {host}:{port} ({why})",
        )
    return target, status, ""


async def agent_run(lab: Lab, vm: VM, noop: bool, override: str | None) -> tuple[int, str, str]:
    """A real `puppet agent -t`: tries server_list in order over TCP+TLS, fetches a catalog.

    Output as Puppet 7 prints it (the tutorial's transcript; real-world-findings §2): warnings for
    every server it skipped, `Error:` lines that do not stop a run (a failing custom fact), the
    applied configuration version, detailed exit codes (0/2 applied, 1 no catalog)."""
    log = AgentLog()
    if lab.fault("puppet.agent", vm.name, f"puppet agent -t on {vm.name}"):
        log("Error", "Could not run: execution expired (injected fault)")
        return 1, "", "".join(log.err)
    entries = _server_list(vm, override)
    connect_timeout = _seconds(_agent_setting(vm, "http_connect_timeout", "2m"))
    chosen = None
    for idx, (host, port) in enumerate(entries):
        target, status, detail = await _try_server(lab, host, port, connect_timeout)
        if status == 200 and target is not None:
            chosen = (host, port, target)
            break
        if status is not None:
            msg = (
                f"Puppet server {host}:{port} is unavailable: {status} "
                f"{http.REASONS.get(status, '')}"
            )
        else:
            msg = f"Unable to connect to server from server_list setting: {detail}"
        if idx < len(entries) - 1:
            log("Warning", f"{msg} Trying with next server from server_list.")
            continue
        tried = ",".join(f"{h}:{p}" for h, p in entries)
        log("Error", msg)
        log(
            "Error",
            "Could not run Puppet configuration client: Could not select a functional puppet "  # noqa: S608
            f"server from server_list: '{tried}'",
        )
        return 1, "".join(log.out), "".join(log.err)
    assert chosen is not None
    host, port, target = chosen
    body = json.dumps(
        {"noop": noop, "environment": "production", "transaction_uuid": str(uuid.uuid4())}
    ).encode()
    log("Info", "Using environment 'production'")
    log("Info", "Retrieving pluginfacts")
    log("Info", "Retrieving plugin")
    log("Info", "Loading facts")
    if lab.faults.has("fact-error", vm.name):
        log(
            "Error",
            'Facter: error while resolving custom fact "pe_dr_broken": undefined method '
            "`split' for nil:NilClass",
        )
    try:
        status, data = await http.request(
            target.address,
            port,
            "POST",
            f"/puppet/v3/catalog/{vm.name}?environment=production",
            server_name=target.name,
            ssl_ctx=lab.client_ssl(),
            headers={"Content-Type": "application/json", "X-Labsim-Certname": vm.name},
            body=body,
            timeout=60,
        )
    except (OSError, TimeoutError) as exc:
        log("Error", f"Could not retrieve catalog from remote server: {exc}")
        return 1, "".join(log.out), "".join(log.err)
    if status != 200:
        log(
            "Error",
            f"Could not retrieve catalog from remote server: Error {status} on SERVER: "
            f"{data.decode(errors='replace')}",
        )
        log("Warning", "Not using cache on failed catalog")
        log("Error", "Could not retrieve catalog; skipping run")
        return 1, "".join(log.out), "".join(log.err)
    catalog = json.loads(data)
    await lab.sleep(lab.dur("agent"), "puppet.agent")
    version = catalog["version"]
    if not noop:
        log("Info", f"Caching catalog for {vm.name}")
    log("Info", f"Applying configuration version '{version}'")
    change = (
        "/Stage[main]/Puppet_enterprise::Profile::Agent/Puppet_enterprise::Puppet_conf/"
        "Pe_ini_setting[agent server_list]/value"
    )
    changed = False
    if not noop:
        changed = _apply(lab, vm, catalog)
        if changed:
            log("Notice", f"{change}: value changed")
    elif _apply(lab, vm, catalog, dry=True):
        log("Notice", f"{change}: current_value 'absent', should be 'present' (noop)")
    log("Notice", "Applied catalog in 0.05 seconds")
    report = {
        "certname": vm.name,
        "producer": target.name,
        "configuration_version": version,
        "status": "changed" if changed else "unchanged",
        "noop": noop,
        "noop_pending": False,
        "environment": "production",
        "start_time": now_iso(),
        "end_time": now_iso(),
        "producer_timestamp": now_iso(),
        "receive_time": now_iso(),
        "transaction_uuid": str(uuid.uuid4()),
        "hash": uuid.uuid4().hex,
        "cached_catalog_status": "not_used",
        "corrective_change": False,
    }
    try:
        await http.request(
            target.address,
            port,
            "PUT",
            f"/puppet/v3/report/{vm.name}",
            server_name=target.name,
            ssl_ctx=lab.client_ssl(),
            headers={"Content-Type": "application/json"},
            body=json.dumps(report).encode(),
        )
    except (OSError, TimeoutError):
        log("Error", "Could not send report: Connection refused")
    return (2 if changed else 0), "".join(log.out), "".join(log.err)


def _apply(lab: Lab, vm: VM, catalog: dict[str, Any], dry: bool = False) -> bool:
    changed = False
    servers = catalog.get("server_list")
    if catalog.get("manage_puppet_conf") and servers:
        conf = configparser.ConfigParser(interpolation=None)
        text = vm.fs.read_text("/etc/puppetlabs/puppet/puppet.conf") or ""
        conf.read_string(text)
        want = ",".join(servers)
        have = conf.get("agent", "server_list") if conf.has_option("agent", "server_list") else None
        if have != want:
            changed = True
            if not dry:
                if not conf.has_section("agent"):
                    conf.add_section("agent")
                conf.set("agent", "server_list", want)
                lines = []
                for sec in conf.sections():
                    lines.append(f"[{sec}]")
                    lines += [f"{k} = {v}" for k, v in conf.items(sec)]
                    lines.append("")
                vm.fs.write("/etc/puppetlabs/puppet/puppet.conf", "\n".join(lines))
    pe = lab.pe
    if pe is not None and vm.name == pe.primary and not dry:
        params = pe.master_params()
        want_cm = bool(
            params.get("code_manager_auto_configure")
            and params.get("r10k_remote")
            and params.get("r10k_private_key")
        )
        if want_cm != pe.cm_active:
            pe.cm_active = want_cm
            changed = True
            lab.spawn(lab.reconcile(vm))
            lab.journal(
                vm.name, "code-manager.configure", "ok", "enabled" if want_cm else "disabled"
            )
    return changed


# -- puppet infrastructure ---------------------------------------------------------------------


def _infra_refuse(ctx: Ctx) -> Result | None:
    if not ctx.root:
        return Result(
            1,
            "",
            "Error: You must be root to run puppet infrastructure commands\n",
            "puppet.infrastructure",
            "refused",
        )
    if not ctx.login:
        return Result(
            1,
            "",
            "Error: puppet infrastructure commands must be run from a root login "
            "session (sudo -i or sudo su -); plain sudo is not sufficient\n",
            "puppet.infrastructure",
            "refused",
        )
    return None


async def puppet_infra(ctx: Ctx, args: list[str]) -> Result:
    refused = _infra_refuse(ctx)
    if refused:
        return refused
    if not args:
        return Result(
            1,
            "",
            "Error: an action is required: configure, provision, enable, status, forget, promote\n",
            "puppet.infrastructure",
        )
    action = args[0]
    if action == "configure":
        return await infra_configure(ctx, args[1:])
    if action == "status":
        return await infra_status(ctx, args[1:])
    if action == "provision" and args[1:2] == ["replica"]:
        return await infra_provision(ctx, args[2:])
    if action == "enable" and args[1:2] == ["replica"]:
        return await infra_enable_cmd(ctx, args[2:])
    if action == "forget":
        return await infra_forget(ctx, args[1:])
    if action == "promote" and args[1:2] == ["replica"]:
        return await infra_promote(ctx, args[2:])
    return Result(1, "", f"Error: Unknown action '{' '.join(args[:2])}'\n", "puppet.infrastructure")


async def infra_configure(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.configure"
    pe = lab.pe
    if pe is None or ctx.vm.name != pe.primary:
        return Result(1, "", "Error: puppet infrastructure configure must run on the primary\n", op)
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(1, "", "Error: Puppet run failed during configure (injected)\n", op, "fault")
    await lab.sleep(lab.dur("configure"), op)
    key = (
        pe.master_params().get("r10k_private_key")
        or "/etc/puppetlabs/puppetserver/ssh/id-control_repo.rsa"
    )
    fs = ctx.vm.fs
    for p in (key, key + ".pub"):
        if fs.exists(p):
            fs.set_owner(p, "pe-puppet", "pe-puppet")
            fs.host(p).chmod(0o600 if not p.endswith(".pub") else 0o644)
    return Result(0, "Notice: Applied catalog in 12.34 seconds\n", "", op)


def _validate_admin(ctx: Ctx, args: list[str], op: str) -> Result | None:
    pe = ctx.lab.pe
    assert pe is not None
    token = _read_token(ctx, _opt(args, "--token-file"))
    user = pe.token_user(token)
    if user is None:
        return Result(
            1,
            "",
            "Error: Unable to validate the RBAC token: the RBAC token is missing, "
            "invalid or expired. Run 'puppet access login' to generate a new token, or "
            "pass --token-file.\n",
            op,
            "refused",
        )
    if not pe.is_admin(user):
        return Result(
            1,
            "",
            f"Error: The RBAC token belongs to user '{user['login']}', who lacks "
            "administrator permissions; an admin token is required.\n",
            op,
            "refused",
        )
    return None


async def _confirm(ctx: Ctx, args: list[str], question: str) -> str | None:
    if "--yes" in args or "-y" in args:
        return None
    answer = await ctx.read_line(timeout=2.0)
    if answer is None or answer.strip().lower() not in ("y", "yes", "a"):
        return f"{question} [Y/n]\nError: No answer given; aborting.\n"
    return None


async def infra_provision(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.provision"
    pe = lab.pe
    names = [a for a in args if not a.startswith("-")]
    if not names:
        return Result(1, "", "Error: provision replica requires the replica's certname\n", op)
    rname = names[0]
    if pe is None or ctx.vm.name != pe.primary:
        return Result(
            1, "", "Error: This command must be run on the primary server\n", op, "refused"
        )
    bad = _validate_admin(ctx, args, op)
    if bad:
        return bad
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1,
            "Running puppet on replica.vm.\nOverall job status: failed...\n",
            f"Error: Error during orchestrated puppet run on {rname}.\n"
            "Error: Puppet failed on one or more nodes.\n",
            op,
            "fault",
        )
    rvm = lab.vm_by_host(rname)
    if rvm is None or rvm.name == pe.primary:
        return Result(1, "", f"Error: Unknown node {rname}\n", op, "refused")
    if not (rvm.serving and rvm.installed and rvm.name in pe.nodes):
        return Result(
            1,
            "",
            f"Error: {rvm.name} is not connected to the orchestrator. Ensure the "
            f"puppet agent is installed on {rvm.name} and pxp-agent is running.\n",
            op,
            "refused",
        )
    if not pe.cm_active or not pe.storage:
        return Result(
            1,
            "",
            "Error: Code Manager must be enabled and configured, with at least one "
            "environment deployed (no file-sync commit found), before provisioning a "
            "replica.\n",
            op,
            "refused",
        )
    enable = "--enable" in args
    topology = _opt(args, "--topology")
    prompt = await _confirm(ctx, args, "Use the new configuration and continue?")
    if prompt:
        return Result(
            1,
            ""
            if topology
            else "A) Monolithic with a single primary\nB) Monolithic with compilers\n",
            prompt.split("\n", 1)[1],
            op,
            "refused",
        )
    out = [
        f"Notice: Provisioning {rvm.name} as a replica of {pe.primary}",
        f"Pinning {rvm.name} to PE Infrastructure Agent",
        f"Running puppet on {rvm.name}. Run 'puppet job show {pe.job_seq + 1}' to monitor "
        "detailed progress.",
    ]
    await lab.sleep(lab.dur("provision"), op)
    pe.replica = rvm.name
    write_client_tools(rvm.fs, pe.primary)  # an infrastructure node gets PE's client tools
    lab.journal(rvm.name, "replica.provisioned", "ok", f"provisioned by {ctx.vm.name}")
    lab.sync_replica()
    out.append(f"Notice: {rvm.name} has been provisioned as a replica.")
    if not enable:
        out.append(f"Notice: Run 'puppet infrastructure enable replica {rvm.name}' to enable it.")
        return Result(0, "\n".join(out) + "\n", "", op)
    res = await _enable(ctx, rvm, args)
    return Result(res.rc, "\n".join(out) + "\n" + res.out, res.err, op)


async def infra_enable_cmd(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.enable"
    pe = lab.pe
    names = [a for a in args if not a.startswith("-")]
    if pe is None or ctx.vm.name != pe.primary or not names:
        return Result(
            1,
            "",
            "Error: This command must be run on the primary with the replica's certname\n",
            op,
            "refused",
        )
    bad = _validate_admin(ctx, args, op)
    if bad:
        return bad
    rvm = lab.vm_by_host(names[0])
    if rvm is None or pe.replica != rvm.name:
        return Result(
            1,
            "",
            f"Error: {names[0]} is not a provisioned replica. Run 'puppet "
            "infrastructure provision replica' first.\n",
            op,
            "refused",
        )
    prompt = await _confirm(
        ctx, args, "Use the new configuration and continue enabling the replica?"
    )
    if prompt:
        return Result(1, "", prompt.split("\n", 1)[1], op, "refused")
    res = await _enable(ctx, rvm, args)
    res.op = op
    return res


async def _enable(ctx: Ctx, rvm: VM, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.enable"
    pe = lab.pe
    assert pe is not None
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1,
            "",
            f"Error: PuppetDB on {rvm.name} is 'starting', not 'running'; the "
            "replica could not be enabled. Run 'puppet infrastructure enable replica' "
            "again once it is running.\n",
            op,
            "fault",
        )
    if not rvm.serving:
        return Result(1, "", f"Error: {rvm.name} is unreachable\n", op)
    await lab.sleep(lab.dur("enable"), op)
    pe.replica_enabled = True
    infra = pe.group("PE Infrastructure")
    master = pe.group("PE Master")
    if not any(g["name"] == "PE HA Master" for g in pe.groups):
        from labsim.state import _group

        pe.groups.append(
            _group(
                "PE HA Master",
                master["id"],
                {
                    "puppet_enterprise::profile::master": {
                        "replication_mode": "source",
                        "provisioned_replicas": [rvm.name],
                    }
                },
            )
        )
        pe.groups.append(
            _group(
                "PE HA Replica",
                infra["id"],
                {"puppet_enterprise::profile::primary_master_replica": {}},
            )
        )
    infra["classes"].setdefault("puppet_enterprise", {})["ha_enabled_replicas"] = [rvm.name]
    skip = "--skip-agent-config" in args
    if lab.faults.has("failover-broken"):
        lab.journal(rvm.name, "failover", "fault", "replica not added to agents' server_list")
    elif not skip:
        pe.set_agent_servers([pe.primary, rvm.name])
    await lab.reconcile(rvm)
    lab.journal(rvm.name, "replica.enabled", "ok", "")
    lab.sync_replica()
    return Result(
        0,
        f"Notice: Replica {rvm.name} enabled.\nNotice: Agents learn the new server_list "
        "on their next Puppet run; run 'puppet job run --no-enforce-environment --query "
        "'nodes {deactivated is null and expired is null}'' to update them now.\n",
        "",
        op,
    )


DB_REPLICATED = {"classifier": "Classifier", "rbac": "RBAC", "activity": "Activity"}


def status_entries(lab: Lab) -> list[dict[str, Any]]:
    """`puppet infrastructure status --format=json` as PE prints it (shape, service names and the
    replication alerts: peadm spec/fixtures/infrastatus.json). Broken database replication keeps
    every service `running` and shows as error alerts on the primary's services
    (`replica:db-replication-inactive`); `replica:unhealthy` is an error alert on a replica service,
    its state `running` too."""
    pe = lab.pe
    if pe is None:
        return []
    prim = lab.vms[pe.primary]
    inactive = pe.replica is not None and lab.faults.has("db-replication-inactive")
    entries: list[dict[str, Any]] = []
    specs = [
        ("code-manager-service", "Code Manager", "code-manager", 8170, "/"),
        ("file-sync-storage-service", "File Sync Storage Service", "file-sync-storage", 8140, "/"),
        ("file-sync-client-service", "File Sync Client Service", "file-sync-client", 8140, "/"),
        ("pe-master", "Puppet Server", "master", 8140, "/"),
        ("classifier-service", "Classifier", "classifier", 4433, "/classifier-api"),
        ("rbac-service", "RBAC", "rbac", 4433, "/rbac-api"),
        ("activity-service", "Activity Service", "activity", 4433, "/activity-api"),
        ("orchestrator-service", "Orchestrator", "orchestrator", 8143, "/orchestrator"),
        ("broker-service", "PCP Broker", "pcp-broker", 8143, "/pcp"),
        ("broker-service", "PCP Broker v2", "pcp-broker", 8143, "/pcp2"),
        ("puppetdb-status", "PuppetDB", "puppetdb", 8081, "/pdb"),
    ]
    for svc, disp, typ, port, path in specs:
        up = port in prim.http
        status: dict[str, Any] | None = {"state": "running"} if up else None
        alerts: list[dict[str, str]] = []
        label = DB_REPLICATED.get(typ) or ("Orchestrator" if typ == "orchestrator" else None)
        if up and pe.replica and pe.replica_enabled and label and status is not None:
            replication = "inactive" if inactive else "running"
            status["replication"] = {"mode": "source", "status": replication}
            if inactive:
                alerts.append(
                    {
                        "severity": "error",
                        "message": f"Database replication for {label} is inactive",
                    }
                )
        entries.append(
            {
                "service": svc,
                "display_name": disp,
                "state": "running" if up else "unreachable",
                "status": status,
                "server": prim.name,
                "url": f"https://{prim.name}:{port}{path}",
                "type": typ,
                "alerts": alerts,
            }
        )
    if pe.replica:
        rvm = lab.vms[pe.replica]
        unhealthy = lab.faults.has("replica-unhealthy")
        # a replica's entries use short service names (the peadm fixture)
        for svc, disp, port, path in [
            ("file-sync-client", "File Sync Client Service", 8140, "/"),
            ("master", "Puppet Server", 8140, "/"),
            ("classifier", "Classifier", 4433, "/classifier-api"),
            ("rbac", "RBAC", 4433, "/rbac-api"),
            ("activity", "Activity Service", 4433, "/activity-api"),
            ("puppetdb", "PuppetDB", 8081, "/pdb"),
        ]:
            up = rvm.serving and rvm.installed and (not pe.replica_enabled or port in rvm.http)
            status = {"state": "running"} if up else None
            alerts = []
            if up and svc in DB_REPLICATED and status is not None:
                replication = "inactive" if inactive else "running"
                status["replication"] = {"mode": "replica", "status": replication}
            if up and unhealthy and svc == "puppetdb":
                # the alert's shape is PE's; its text is labsim's own
                alerts = [
                    {
                        "severity": "error",
                        "message": f"PuppetDB on {rvm.name} cannot sync with {prim.name} "
                        "(labsim fault replica:unhealthy)",
                    }
                ]
            entries.append(
                {
                    "service": svc,
                    "display_name": disp,
                    "state": "running" if up else "unreachable",
                    "status": status,
                    "server": rvm.name,
                    "url": f"https://{rvm.name}:{port}{path}",
                    "type": svc,
                    "alerts": alerts,
                }
            )
    return entries


async def infra_status(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.status"
    pe = lab.pe
    if pe is None or ctx.vm.name not in (pe.primary, pe.replica):
        return Result(1, "", "Error: puppet infrastructure status must run on a PE server\n", op)
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(
            1,
            "",
            "Error: Unable to contact services for status information (injected)\n",
            op,
            "fault",
        )
    await lab.sleep(lab.dur("status"), op)
    entries = status_entries(lab)
    host = _opt(args, "--host")
    if host:
        entries = [e for e in entries if e["server"] == host]
    if any(a == "--format=json" for a in args) or _opt(args, "--format") == "json":
        return Result(0, json.dumps(entries, indent=2) + "\n", "", op)
    lines = ["Notice: Contacting services for status information..."]
    for e in entries:
        role = "Primary" if e["server"] == pe.primary else "Replica"
        st = {"running": "Running", "error": "Error", "unreachable": "Unreachable"}[e["state"]]
        lines.append(f"{e['display_name']}: {st} on {role}, {e['url']}")
        for a in e["alerts"]:
            lines.append(f"    {a['severity'].capitalize()}: {a['message']}")
    ok = sum(e["state"] == "running" for e in entries)
    lines.append(time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime()))
    lines.append(f"{ok} of {len(entries)} services are fully operational.")
    return Result(0 if ok == len(entries) else 1, "\n".join(lines) + "\n", "", op)


async def infra_forget(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.forget"
    pe = lab.pe
    names = [a for a in args if not a.startswith("-") and a != _opt(args, "--token-file")]
    if pe is None or ctx.vm.name != pe.primary or not names:
        return Result(
            1, "", "Error: forget must run on the primary with a certname\n", op, "refused"
        )
    bad = _validate_admin(ctx, args, op)
    if bad:
        return bad
    if lab.fault(op, ctx.vm.name, ctx.line):
        return Result(1, "", "Error: Failed to purge node (injected)\n", op, "fault")
    name = names[0]
    vm = lab.vm_by_host(name)
    cert = vm.name if vm else name
    if cert not in pe.nodes and cert != pe.replica:
        return Result(
            1, "", f"Error: {cert} is not a known node of this Puppet Enterprise installation\n", op
        )
    await lab.sleep(lab.dur("forget"), op)
    if pe.replica == cert:
        pe.replica = None
        pe.replica_enabled = False
        pe.groups = [g for g in pe.groups if g["name"] not in ("PE HA Master", "PE HA Replica")]
        pe.set_agent_servers([pe.primary])
        pe.clients.pop(cert, None)
        if vm:
            await lab.reconcile(vm)
    if cert in pe.nodes and cert != pe.primary:
        pe.nodes.remove(cert)
    return Result(
        0,
        f"Notice: {cert} has been forgotten: its certificate was revoked and it was purged.\n",
        "",
        op,
    )


async def infra_promote(ctx: Ctx, args: list[str]) -> Result:
    lab, op = ctx.lab, "puppet.infrastructure.promote"
    pe = lab.pe
    vm = ctx.vm
    if pe is None or pe.replica != vm.name:
        return Result(
            1,
            "",
            "Error: This node is not a provisioned replica; run promote on the replica.\n",
            op,
            "refused",
        )
    if lab.fault(op, vm.name, ctx.line):
        return Result(
            1,
            "",
            "Error: Promotion failed: Puppet run on the replica failed (injected)\n",
            op,
            "fault",
        )
    if not pe.replica_enabled:
        return Result(
            1,
            "",
            f"Error: {vm.name} is not an enabled replica. Run 'puppet "
            "infrastructure enable replica' first.\n",
            op,
            "refused",
        )
    prim = lab.vms.get(pe.primary)
    if await lab.tcp_open(prim, 8140):
        # PE documents the precondition (the old primary permanently offline, PDF-2021.7.1
        # p.280) but the command itself does not check it: two primaries confuse the agents.
        lab.journal(vm.name, "promote.split-brain", "failed", f"{pe.primary} still answers")
    prompt = await _confirm(ctx, args, "Promote this replica to primary?")
    if prompt:
        return Result(1, "", prompt.split("\n", 1)[1], op, "refused")
    await lab.sleep(lab.dur("promote"), op)
    fs = vm.fs
    lost = False
    from labsim.lab import KEY_FILES, KEY_OWNERS

    for path in KEY_FILES:
        have = fs.read_text(path)
        if have is None or have.strip() != pe.primary_keys.get(path, "").strip():
            lost = True
    if lost:
        import secrets as _s

        for path, owner in zip(KEY_FILES, KEY_OWNERS, strict=True):
            content = json.dumps(
                [{"key": _s.token_urlsafe(64)[:86], "id": str(uuid.uuid4())}], separators=(",", ":")
            )
            fs.write(path, content, 0o640, owner, owner)
        lab.journal(
            vm.name,
            "promote.keys",
            "failed",
            "orchestrator keys regenerated; stored credentials lost",
        )
    old = pe.primary
    pe.primary = vm.name
    pe.primary_keys = {p: fs.read_text(p) or "" for p in KEY_FILES}
    pe.replica = None
    pe.replica_enabled = False
    pe.promoted = True
    pe.groups = [g for g in pe.groups if g["name"] not in ("PE HA Master", "PE HA Replica")]
    pe.set_agent_servers([vm.name])
    pe.clients.pop(old, None)
    await lab.reconcile(vm)
    if prim:
        await lab.reconcile(prim)
    out = [
        f"Notice: Promoting {vm.name} to primary",
        "Notice: Applied catalog in 120.5 seconds",
        f"Notice: {vm.name} is now the primary server.",
    ]
    if lost:
        out.append(
            "Warning: Secret key files were not found on the replica; new keys were "
            "generated. Stored credentials and encrypted data can no longer be read."
        )
    return Result(0, "\n".join(out) + "\n", "", op)


FILE_COMMANDS = {
    "true": c_true,
    "echo": c_echo,
    "hostname": c_hostname,
    "whoami": c_whoami,
    "id": c_id,
    "cat": c_cat,
    "test": c_test,
    "mkdir": c_mkdir,
    "install": c_install,
    "rm": c_rm,
    "stat": c_stat,
    "sha256sum": c_sha256sum,
    "chmod": c_chmod,
    "chown": c_chown,
    "ls": c_ls,
    "ssh-keygen": c_ssh_keygen,
    "ssh-keyscan": c_ssh_keyscan,
    "git": c_git,
}

_ = os
