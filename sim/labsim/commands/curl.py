"""`curl` on a VM: a real HTTPS request from the VM's address, with the client certificate and CA
files it is given, so the lab's services see a verified certname exactly as PE's services see a
host certificate (PE's own docs query PuppetDB and the status API this way:
`curl --cert $(puppet config print hostcert) --key ... --cacert ...`).

The options the drill uses are modelled (curl(1)); exit codes are curl's: 7 could not connect,
28 timed out, 35 TLS handshake failed, 58 bad local certificate, 60 server certificate not
verified.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any

from labsim import http
from labsim.commands.base import Ctx, Result

_VALUED = {
    "--connect-timeout",
    "--max-time",
    "-m",
    "--cert",
    "-E",
    "--key",
    "--cacert",
    "--resolve",
    "--request",
    "-X",
    "--header",
    "-H",
    "--data-binary",
    "--data",
    "-d",
}


def _fail(code: int, message: str) -> Result:
    return Result(code, "", f"curl: ({code}) {message}\n", "curl", "failed")


async def c_curl(ctx: Ctx, args: list[str]) -> Result:
    opts: dict[str, list[str]] = {}
    urls: list[str] = []
    flags: set[str] = set()
    it = iter(args)
    for arg in it:
        if arg in _VALUED:
            opts.setdefault(arg, []).append(next(it, ""))
        elif arg.startswith("-"):
            flags.add(arg)
        else:
            urls.append(arg)
    if len(urls) != 1:
        return Result(2, "", "curl: option error: one URL is modelled\n", "curl", "failed")
    url = urllib.parse.urlsplit(urls[0])
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    fs = ctx.vm.fs

    def read(option: str, *aliases: str) -> bytes | Result | None:
        given = next((opts[o][-1] for o in (option, *aliases) if o in opts), None)
        if given is None:
            return None
        path = fs.norm(given, ctx.cwd)
        if not fs.host(path).is_file():
            return _fail(58, f"could not load PEM client certificate from {given}")
        if not fs.can_read(ctx.user, path):
            return _fail(58, f"could not load {given}: Permission denied")
        return fs.host(path).read_bytes()

    cert, key, ca = read("--cert", "-E"), read("--key"), read("--cacert")
    for loaded in (cert, key, ca):
        if isinstance(loaded, Result):
            return loaded
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        try:
            if ca is None:
                context = ssl.create_default_context()
            else:
                assert isinstance(ca, bytes)
                context = ssl.create_default_context(cadata=ca.decode())
            if cert is not None:
                assert isinstance(cert, bytes) and isinstance(key, bytes)
                context.load_cert_chain(
                    fs.host(fs.norm(opts.get("--cert", opts.get("-E", [""]))[-1], ctx.cwd)),
                    fs.host(fs.norm(opts["--key"][-1], ctx.cwd)),
                )
        except (ssl.SSLError, ValueError, KeyError) as exc:
            return _fail(58, f"unable to set private key file: {exc}")
    address = _resolved(ctx, opts.get("--resolve", []), host, port)
    if address is None:
        return _fail(6, f"Could not resolve host: {host}")
    method = (opts.get("--request") or opts.get("-X") or ["GET"])[-1]
    headers = {}
    for line in opts.get("--header", []) + opts.get("-H", []):
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    body = b""
    given = opts.get("--data-binary") or opts.get("--data") or opts.get("-d")
    data = given[-1] if given else None
    if data == "@-":
        body = await _stdin(ctx)
    elif data is not None:
        body = data.encode()
    if body and method == "GET":
        method = "POST"
    connect = float((opts.get("--connect-timeout") or ["10"])[-1])
    total = float((opts.get("--max-time") or opts.get("-m") or ["30"])[-1])
    target = url.path or "/"
    if url.query:
        target += "?" + url.query
    try:
        status, answer_headers, answer = await http.exchange(
            address,
            port,
            method,
            target,
            server_name=host,
            ssl_ctx=context,
            headers=headers,
            body=body,
            timeout=total,
            connect_timeout=connect,
        )
    except ConnectionRefusedError:
        return _fail(7, f"Failed to connect to {host} port {port}: Connection refused")
    except http.ConnectTimeout:
        return _fail(28, f"Connection timed out after {int(connect * 1000)} milliseconds")
    except ssl.SSLCertVerificationError as exc:
        return _fail(60, f"SSL certificate problem: {exc.verify_message}")
    except ssl.SSLError as exc:
        return _fail(35, f"TLS connect error: {exc.reason or exc}")
    except TimeoutError:
        return _fail(28, f"Operation timed out after {int(total * 1000)} milliseconds")
    except OSError as exc:
        return _fail(7, f"Failed to connect to {host} port {port}: {exc.strerror or exc}")
    out = answer.decode(errors="replace")
    if "--include" in flags or "-i" in flags:
        head = [f"HTTP/1.1 {status} {http.REASONS.get(status, '')}"]
        head += [f"{k}: {v}" for k, v in answer_headers.items()]
        out = "\r\n".join(head) + "\r\n\r\n" + out
    return Result(0, out, "", "curl", "ok")


def _resolved(ctx: Ctx, resolve: list[str], host: str, port: int) -> str | None:
    """`--resolve HOST:PORT:ADDRESS` first, else the VM's /etc/hosts (the lab's names)."""
    for entry in resolve:
        name, _, rest = entry.partition(":")
        given_port, _, address = rest.partition(":")
        if name == host and given_port == str(port) and address:
            return address
    found = ctx.lab.vm_by_host(host)
    return found.address if found else None


async def _stdin(ctx: Ctx) -> bytes:
    process: Any = ctx.process
    data = await process.stdin.read() if process is not None else b""
    return data.encode() if isinstance(data, str) else bytes(data or b"")
