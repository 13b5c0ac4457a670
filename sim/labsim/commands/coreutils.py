"""Core utilities on a VM: cat, test, mkdir, install, rm, stat, sha256sum, chmod, chown, ls,
and a few more, with POSIX permissions over the VM's own file tree."""

from __future__ import annotations

import hashlib
import re
import shutil
import stat as statmod
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from labsim.commands.base import Ctx, Result

if TYPE_CHECKING:
    pass


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


def _each_file(
    ctx: Ctx, tool: str, paths: list[str], answer: Callable[[str, bytes], str]
) -> Result:
    """`tool` over files, as coreutils words its errors: each readable file's `answer`."""
    fs = ctx.vm.fs
    out, err = [], []
    for p in paths:
        vpath = fs.norm(p, ctx.cwd)
        hp = fs.host(vpath)
        if not fs.can_read(ctx.user, vpath):
            err.append(f"{tool}: {p}: Permission denied\n")
        elif hp.is_dir() and tool == "cat":
            err.append(f"{tool}: {p}: Is a directory\n")
        elif not hp.is_file():
            err.append(f"{tool}: {p}: No such file or directory\n")
        else:
            out.append(answer(p, hp.read_bytes()))
    return Result(1 if err else 0, "".join(out), "".join(err), f"file.{tool}")


async def c_cat(ctx: Ctx, args: list[str]) -> Result:
    return _each_file(ctx, "cat", args, lambda _p, data: data.decode(errors="replace"))


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
            return _refused(
                f"mkdir: cannot create directory '{p}': Permission denied\n", "file.mkdir"
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
        return _refused(
            "install: cannot change ownership: Operation not permitted\n", "file.install"
        )
    if dir_mode:
        for p in paths:
            vpath = fs.norm(p, ctx.cwd)
            if not fs.can_write(ctx.user, vpath):
                return _refused(
                    f"install: cannot create directory '{p}': Permission denied\n", "file.install"
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
        return _refused(
            f"install: cannot open '{src}' for reading: Permission denied\n", "file.install"
        )
    if hdest.is_dir():
        hdest = hdest / hsrc.name
        vdest = fs.vm_path(hdest)
    if not fs.can_write(ctx.user, vdest):
        return _refused(
            f"install: cannot create regular file '{dest}': Permission denied\n", "file.install"
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


def _refused(message: str, op: str) -> Result:
    """What coreutils answer when the user may not write there: exit 1, the message on stderr."""
    return Result(1, "", message, op, "refused")


def _fmt(fmt: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return re.sub(r"%([aUGnsAF])", sub, fmt)


async def c_sha256sum(ctx: Ctx, args: list[str]) -> Result:
    return _each_file(
        ctx,
        "sha256sum",
        [a for a in args if not a.startswith("-")],
        lambda p, data: f"{hashlib.sha256(data).hexdigest()}  {p}\n",
    )


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
            return _refused(
                f"chmod: changing permissions of '{p}': Operation not permitted\n", "file.chmod"
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
        return _refused(
            f"chown: changing ownership of '{paths[0]}': Operation not permitted\n", "file.chown"
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
