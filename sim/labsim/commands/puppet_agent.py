"""`puppet agent -t`: a real agent's run against server_list, as Puppet 7 prints it."""

from __future__ import annotations

import configparser
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from labsim import http
from labsim.commands.base import Ctx, Result, _opt, to_server
from labsim.commands.client_tools import CLIENT_TOOLS, write_client_tools
from labsim.state import now_iso

if TYPE_CHECKING:
    from labsim.lab import VM, Lab


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
        status, _ = await to_server(
            lab,
            target,
            port,
            "GET",
            "/status/v1/simple/server",
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
    pe = lab.pe
    if pe is not None and vm.name in pe.pending_certs:
        # Puppet 7, waitforcert 0 (what `-t` implies): the run stops until the CA signs
        log(
            "Error",
            "Could not request certificate: Couldn't fetch certificate from CA server; you might "
            f"still need to sign this agent's certificate ({vm.name}). Exiting now because the "
            "waitforcert setting is set to 0.",
        )
        return 1, "".join(log.out), "".join(log.err)
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
        {
            "noop": noop,
            "environment": "production",
            "transaction_uuid": str(uuid.uuid4()),
            "facts": _facts(vm),
        }
    ).encode()
    log("Info", "Using environment 'production'")
    log("Info", "Retrieving pluginfacts")
    log("Info", "Retrieving plugin")
    log("Info", "Loading facts")
    if lab.faults.has("fact-error", vm.name):
        # the wording of tests/golden/real-failing-fact.txt (puppet-agent 7.23)
        log(
            "Error",
            "Facter: Error while resolving custom fact fact='pe_dr_broken', "
            "resolution='<anonymous>': pe-dr-drill: this custom fact fails on purpose",
        )
    try:
        status, data = await to_server(
            lab,
            target,
            port,
            "POST",
            f"/puppet/v3/catalog/{vm.name}?environment=production",
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
        await to_server(
            lab,
            target,
            port,
            "PUT",
            f"/puppet/v3/report/{vm.name}",
            headers={"Content-Type": "application/json"},
            body=json.dumps(report).encode(),
        )
    except (OSError, TimeoutError):
        log("Error", "Could not send report: Connection refused")
    return (2 if changed else 0), "".join(log.out), "".join(log.err)


FACTS_D = "/etc/puppetlabs/facter/facts.d"


def _client_tool_files() -> list[str]:
    return [f"{CLIENT_TOOLS}/{n}" for n in ("puppet-access.conf", "puppet-code.conf",
                                            "orchestrator.conf")]  # fmt: skip


def _facts(vm: VM) -> dict[str, Any]:
    """The facts a run sends with its catalog request: a few core facts and the external facts of
    facts.d, JSON files (key: value) and text files (key=value) (Facter's external facts)."""
    facts: dict[str, Any] = {"certname": vm.name, "fqdn": vm.name, "hostname": vm.short}
    folder = vm.fs.host(FACTS_D)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            text = path.read_text(errors="replace")
            if path.suffix == ".json":
                try:
                    found = json.loads(text)
                except ValueError:
                    continue
                if isinstance(found, dict):
                    facts.update(found)
            elif path.suffix == ".txt":
                for line in text.splitlines():
                    key, sep, value = line.partition("=")
                    if sep and key.strip():
                        facts[key.strip()] = value.strip()
    return facts


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
        # puppet_enterprise::profile::controller manages the global client-tools files, naming
        # the primary (PE manual p.809, p.320-321, p.615; real-world-findings §4.2 row 8)
        before = {p: vm.fs.read_text(p) for p in _client_tool_files()}
        write_client_tools(vm.fs, vm.name)
        if {p: vm.fs.read_text(p) for p in _client_tool_files()} != before:
            changed = True
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
