"""A Puppet agent run on one agent, read as its fields: what the checks look at."""

from __future__ import annotations

from pe_dr.errors import CommandFailed
from pe_dr.lab.live import Lab
from pe_dr.parsing.agent import AgentRun, parse_agent_run


def agent_run(
    lab: Lab, agent: str, *, server_list: str | None = None, noop: bool = True
) -> AgentRun:
    argv = ["puppet", "agent", "-t"]
    if noop:
        argv.append("--noop")
    if server_list:
        argv.append(f"--server_list={server_list}")
    try:
        out = lab.host(agent).run(argv, root=True, ok_codes=(0, 1, 2, 4, 6), timeout=1800)
    except CommandFailed as exc:
        return parse_agent_run(exc.stdout + "\n" + exc.stderr, exc.exit_code)
    return parse_agent_run(out.stdout + "\n" + out.stderr, out.exit_code)
