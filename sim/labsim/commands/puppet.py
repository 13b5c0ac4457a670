"""`puppet SUBCOMMAND`: the router to access, agent, config, job, code and infrastructure."""

from __future__ import annotations

import configparser
from typing import TYPE_CHECKING

from labsim.commands.base import Ctx, Result, _opt
from labsim.commands.puppet_access import puppet_access
from labsim.commands.puppet_agent import puppet_agent_cmd
from labsim.commands.puppet_code import puppet_code
from labsim.commands.puppet_infra import puppet_infra
from labsim.commands.puppet_job import puppet_job

if TYPE_CHECKING:
    pass


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
