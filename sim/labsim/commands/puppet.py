"""`puppet SUBCOMMAND`: the router to access, agent, config, job, code and infrastructure."""

from __future__ import annotations

import configparser
from typing import TYPE_CHECKING

from labsim.commands.base import Ctx, Result, _opt
from labsim.commands.puppet_access import puppet_access
from labsim.commands.puppet_agent import puppet_agent_cmd
from labsim.commands.puppet_code import puppet_code
from labsim.commands.puppet_infra import puppet_infra, puppet_node_purge
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
    if sub == "node" and args[1:2] == ["purge"]:
        return await puppet_node_purge(ctx, args[2:])
    return Result(1, "", f"Error: Unknown Puppet subcommand '{sub}'\n", "puppet")


async def puppet_config(ctx: Ctx, args: list[str]) -> Result:
    """`puppet config print NAME...`: one name prints its value alone, several print `NAME =
    value` lines (Puppet 7's `puppet config print`). Settings not in puppet.conf take Puppet's
    defaults for the few the drill reads."""
    if len(args) < 2 or args[0] != "print":
        return Result(1, "", "Error: labsim models only 'puppet config print'\n", "puppet.config")
    section = _opt(args, "--section") or "main"
    names: list[str] = []
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--section":
            next(rest, None)
        elif not arg.startswith("--"):
            names.append(arg)
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(ctx.vm.fs.read_text("/etc/puppetlabs/puppet/puppet.conf") or "")
    ssldir = "/etc/puppetlabs/puppet/ssl"
    certname = ctx.vm.name
    defaults = {
        "server": "puppet",
        "certname": certname,
        "ssldir": ssldir,
        "hostcert": f"{ssldir}/certs/{certname}.pem",
        "hostprivkey": f"{ssldir}/private_keys/{certname}.pem",
        "localcacert": f"{ssldir}/certs/ca.pem",
    }
    values = {}
    for name in names:
        value = ""
        for sec in (section, "main"):
            if conf.has_option(sec, name):
                value = conf.get(sec, name)
                break
        values[name] = value.strip() or defaults.get(name, "")
    if len(names) == 1:
        return Result(0, values[names[0]] + "\n", "", "puppet.config")
    return Result(0, "".join(f"{n} = {v}\n" for n, v in values.items()), "", "puppet.config")
