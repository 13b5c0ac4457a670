"""`puppet access login|show`: RBAC tokens, the password on stdin."""

from __future__ import annotations

import json
import uuid

from labsim.commands.base import Ctx, Result, _opt, _read_token, _url_host, to_server
from labsim.commands.client_tools import _service_url


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
    failed = ctx.injected(
        op, "Error: Failed to connect to the RBAC service: 503 Service Unavailable\n"
    )
    if failed is not None:
        return failed
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
        status, data = await to_server(
            lab,
            target,
            port,
            "POST",
            "/rbac-api/v1/auth/token",
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
