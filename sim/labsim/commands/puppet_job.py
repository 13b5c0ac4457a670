"""`puppet job run`: an orchestrator Puppet run job."""

from __future__ import annotations

from labsim.commands.base import Ctx, Result, _opt, _read_token


async def puppet_job(ctx: Ctx, args: list[str]) -> Result:
    lab = ctx.lab
    op = "puppet.job.run"
    if not args or args[0] != "run":
        return Result(1, "", "Error: labsim models 'puppet job run'\n", op)
    failed = ctx.injected(op, "Error: Failed to connect to the orchestrator: 503\n")
    if failed is not None:
        return failed
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
