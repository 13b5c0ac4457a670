"""`puppet infrastructure configure|provision|enable|status|forget|promote replica`."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from labsim.commands.base import Ctx, Result, _opt, _read_token
from labsim.commands.client_tools import write_client_tools
from labsim.commands.puppet_infra_status import infra_status

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


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
    failed = ctx.injected(op, "Error: Puppet run failed during configure (injected)\n")
    if failed is not None:
        return failed
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
    failed = ctx.injected(
        op,
        f"Error: Error during orchestrated puppet run on {rname}.\n"
        "Error: Puppet failed on one or more nodes.\n",
        out="Running puppet on replica.vm.\nOverall job status: failed...\n",
    )
    if failed is not None:
        return failed
    rvm = lab.vm_by_host(rname)
    if rvm is None or rvm.name == pe.primary:
        return Result(1, "", f"Error: Unknown node {rname}\n", op, "refused")
    if not (rvm.serving and rvm.installed and rvm.name in pe.nodes) or (
        rvm.name in pe.pending_certs
    ):
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
    failed = ctx.injected(
        op,
        f"Error: PuppetDB on {rvm.name} is 'starting', not 'running'; the "
        "replica could not be enabled. Run 'puppet infrastructure enable replica' "
        "again once it is running.\n",
    )
    if failed is not None:
        return failed
    if not rvm.serving:
        return Result(1, "", f"Error: {rvm.name} is unreachable\n", op)
    await lab.sleep(lab.dur("enable"), op)
    pe.replica_enabled = True
    if pe.promoted:
        # a new replica of a promoted primary (reprotect; peadm's failover test adds one the same
        # way): a fresh HA pair, replicating from the current primary
        from labsim.replication import Replication

        pe.promoted = False
        lab.replication = Replication()
        lab.replica_group_edits.clear()
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
    lab.puppetdb.enabled(lab)
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


async def infra_forget(ctx: Ctx, args: list[str]) -> Result:
    """`puppet infrastructure forget <certname>`: documented for a replica, with the admin token
    from its default place and no --token-file (PE manual p.270, p.281-282); whether it takes one
    is not documented, so labsim refuses it (the stricter answer; real-world-findings §4.2 row 6).
    It fails on an unknown node (findings §1 row 7)."""
    lab, op = ctx.lab, "puppet.infrastructure.forget"
    pe = lab.pe
    flags = [a for a in args if a.startswith("-")]
    if flags:
        return Result(1, "", f"Error: Unknown option '{flags[0].split('=')[0]}'\n", op, "refused")
    names = list(args)
    if pe is None or ctx.vm.name != pe.primary or not names:
        return Result(
            1, "", "Error: forget must run on the primary with a certname\n", op, "refused"
        )
    bad = _validate_admin(ctx, [], op)
    if bad:
        return bad
    failed = ctx.injected(op, "Error: Failed to purge node (injected)\n")
    if failed is not None:
        return failed
    cert = _known_node(lab, names[0])
    if cert is None:
        return Result(
            1,
            "",
            f"Error: {names[0]} is not a known node of this Puppet Enterprise installation\n",
            op,
        )
    await lab.sleep(lab.dur("forget"), op)
    await _purge(lab, cert)
    return Result(
        0,
        f"Notice: {cert} has been forgotten: its certificate was revoked and it was purged.\n",
        "",
        op,
    )


def _known_node(lab: Lab, name: str) -> str | None:
    pe = lab.pe
    assert pe is not None
    vm = lab.vm_by_host(name)
    cert = vm.name if vm else name
    return cert if cert in pe.nodes or cert == pe.replica else None


async def _purge(lab: Lab, cert: str) -> None:
    """Revoke, clean and deactivate `cert`; a forgotten replica is no longer PE's replica."""
    pe = lab.pe
    assert pe is not None
    vm = lab.vm_by_host(cert)
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


async def puppet_node_purge(ctx: Ctx, args: list[str]) -> Result:
    """`puppet node purge <certname>` on the primary (the CA): revokes and cleans the certificate
    and deactivates the node in PuppetDB (Puppet's `node purge`; peadm's recovery procedure for a
    failed primary: documentation/recovery/recovery.md)."""
    lab, op = ctx.lab, "puppet.node.purge"
    pe = lab.pe
    if not ctx.root:
        return Result(1, "", "Error: Permission denied\n", op, "refused")
    if pe is None or ctx.vm.name != pe.primary or len(args) != 1:
        return Result(1, "", "Error: puppet node purge runs on the primary: one certname\n", op)
    failed = ctx.injected(op, "Error: Could not purge the node (injected)\n")
    if failed is not None:
        return failed
    cert = _known_node(lab, args[0])
    if cert is None:
        return Result(1, "", f"Error: Could not find a certificate for {args[0]}\n", op)
    await _purge(lab, cert)
    return Result(0, f"Notice: Revoked certificate with serial 7\nNotice: {cert} purged\n", "", op)


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
    # promotion configures the replica as the primary with Puppet runs on it (PE manual
    # "Promote a replica"): its own agent now asks itself
    from labsim.lab import PUPPET_CONF

    fs.write(PUPPET_CONF, f"[agent]\nserver_list = {vm.name}:8140\n")
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


async def puppetserver_ca(ctx: Ctx, args: list[str]) -> Result:
    """`puppetserver ca sign --certname NAME` on the primary (the CA): signs a waiting request
    (Puppet's `puppetserver ca` CLI; an unknown or already signed name is an error, exit 1)."""
    lab, op = ctx.lab, "puppetserver.ca.sign"
    pe = lab.pe
    if args[:2] != ["ca", "sign"]:
        return Result(1, "", "labsim models only 'puppetserver ca sign --certname NAME'\n", op)
    if not ctx.root:
        return Result(1, "", "Error: Permission denied\n", op, "refused")
    if pe is None or ctx.vm.name != pe.primary:
        return Result(1, "", "Error: this host is not the CA\n", op, "refused")
    name = _opt(args, "--certname")
    if not name or name not in pe.pending_certs:
        return Result(1, "", f"Error: Could not find certificate request for {name}\n", op)
    pe.pending_certs.discard(name)
    return Result(0, f"Successfully signed certificate request for {name}\n", "", op)
