"""ssh-keygen, ssh-keyscan and git on a VM: real OpenSSH and git underneath, pointed at the lab."""

from __future__ import annotations

import asyncio
import posixpath
import shlex
from typing import TYPE_CHECKING

import asyncssh

from labsim.commands.base import Ctx, Result

if TYPE_CHECKING:
    pass


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
    if "-y" in args:  # print the public key of a private key: reads only
        if not fs.can_read(ctx.user, target):
            return Result(1, "", f'Load key "{target}": Permission denied\n', "ssh-keygen")
        rc, out, err = await _subprocess(ctx, ["ssh-keygen", *mapped])
        return Result(rc, out, fs.strip(err), "ssh-keygen")
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
    sub0 = sub[0] if sub else ""
    if sub0 == "clone":
        # `git clone [OPTIONS] REPO [DIR]`: DIR is a path of the VM, never of the machine
        # labsim runs on (only the repository is remote)
        positional = [
            n
            for n, a in enumerate(sub[1:], 1)
            if not a.startswith("-") and sub[n - 1] != "--branch"
        ]
        if len(positional) == 2:
            target = fs.norm(sub[positional[1]], cwd)
            if not fs.can_write(ctx.user, posixpath.dirname(target)):
                return Result(128, "", f"fatal: could not create leading directories of "
                              f"'{target}': Permission denied\n", "git", "refused")  # fmt: skip
            fs.host(posixpath.dirname(target)).mkdir(parents=True, exist_ok=True)
            sub = [*sub[: positional[1]], str(fs.host(target)), *sub[positional[1] + 1 :]]
        else:
            return Result(128, "", "labsim: git clone needs an explicit directory\n", "git")
    gitargs += sub
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
        failed = ctx.injected(
            op,
            "ssh: connect to host gitlab.vm port 22: Connection timed out\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\n"
            "and the repository exists.\n",
            rc=128,
        )
        if failed is not None:
            return failed
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
