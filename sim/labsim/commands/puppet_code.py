"""`puppet-code deploy|status`: Code Manager from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from labsim.commands.base import Ctx, Result, _opt, _read_token, _url_host, to_server
from labsim.commands.client_tools import _service_url

if TYPE_CHECKING:
    pass


GLOBAL_OPTIONS = (
    "--token-file",
    "-t",
    "--service-url",
    "-c",
    "--config-file",
    "-l",
    "--log-level",
    "--cacert",
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
        if a in GLOBAL_OPTIONS:
            skip = True
            continue
        rest.append(a)
    if not rest or rest[0] not in ("deploy", "status"):
        return Result(1, "", "Error: labsim models 'puppet-code deploy' and 'status'\n", op)
    action_at = args.index(rest[0])
    late = [a for a in args[action_at:] if a.split("=")[0] in GLOBAL_OPTIONS]
    if late:
        # `puppet-code [GLOBAL_OPTIONS] <ACTION> [ACTION_OPTIONS]`: since PE 2016.5 a global
        # option after the action is refused (docs-archive 2016.5 release notes; PE manual
        # p.810-813; real-world-findings §4.2 row 7)
        return Result(
            1,
            "",
            f"Error: Unknown option '{late[0]}' for action '{rest[0]}': global options go "
            "before the action (puppet-code [GLOBAL_OPTIONS] <ACTION>)\n",
            op,
            "refused",
        )
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
    faulted = ctx.injected(
        op, "Error: Code Manager request failed: 503 Service Unavailable\n", out=pre
    )
    if faulted is not None:
        return faulted
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
        status, data = await to_server(
            lab,
            target,
            port,
            "POST",
            "/code-manager/v1/deploys",
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
