"""PE's HTTPS APIs called on a PE server itself, over SSH, with that server's host certificate.

While the primary is down, a token is a poor credential on the replica: PE's PuppetDB asks the
RBAC service of the console host (the primary) about every token (clj-rbac-client
`valid-token->subject`; PE module `profile/puppetdb.pp`), and whether the replica's own RBAC
accepts one then is not documented (real-world-findings §4.1 rows 1-2). PE's services reach each
other with their host certificates, whose certnames PE allows on PuppetDB and in the status,
classifier and RBAC APIs; the drill reads the replica the same way: on the replica, as root,
`curl` with the files `puppet config print hostcert hostprivkey localcacert` names.

`HostCurlTransport` is an httpx transport, so `PEClient` and its error mapping work unchanged
over it. It sends no credential but the certificate: a request that carries a token header is
refused (the token would be on a command line).
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Mapping

import httpx

from pe_dr.errors import CommandFailed, PermanentError
from pe_dr.lab.host import Host

CERT_SETTINGS = ("hostcert", "hostprivkey", "localcacert")
# Headers that carry a credential; never put on a command line.
_SECRET_HEADERS = {"x-authentication", "authorization", "private-token", "cookie"}
_SKIPPED_HEADERS = {"host", "content-length", "connection", "accept-encoding", "user-agent"}


def parse_config_print(text: str, names: tuple[str, ...]) -> dict[str, str]:
    """`puppet config print A B C` prints `A = value` lines; with one name, the value alone."""
    found: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) == 1 and len(lines) == 1 and " = " not in lines[0]:
        return {names[0]: lines[0]}
    for line in lines:
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in names:
            found[key.strip()] = value.strip()
    return found


def parse_curl_include(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of what `curl --include` printed (interim 1xx answers skipped)."""
    rest = raw
    while True:
        head, sep, body = rest.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = rest.partition(b"\n\n")
        lines = head.decode("latin-1").splitlines()
        if not lines or not lines[0].startswith("HTTP/"):
            raise ValueError("curl printed no HTTP status line")
        status = int(lines[0].split()[1])
        if 100 <= status < 200 and body.startswith(b"HTTP/"):
            rest = body
            continue
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip(), value.strip()))
        return status, headers, body


def _ssl_error(kind: type[ssl.SSLError], text: str) -> ssl.SSLError:
    """An ssl error as the ssl module makes one (its `reason` read by the error mapping)."""
    error = kind(1, text)
    error.reason = text
    if isinstance(error, ssl.SSLCertVerificationError):
        error.verify_message = text
        error.verify_code = 0
    return error


def _curl_error(code: int, stderr: str, request: httpx.Request) -> Exception:
    """httpx's own exception for a curl failure, so `pe_dr.clients.http.send` maps it as it maps
    one of httpx's (curl's exit codes: curl(1) "EXIT CODES")."""
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"curl exited with {code}"
    text = text.removeprefix("curl: ")
    cause: BaseException
    if code == 7:
        lowered = text.lower()
        if "no route" in lowered:
            cause = OSError(errno.EHOSTUNREACH, "No route to host")
        elif "timed out" in lowered:
            cause = OSError(errno.ETIMEDOUT, "Connection timed out")
        else:
            cause = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        error: Exception = httpx.ConnectError(text, request=request)
    elif code == 28:
        timeout = httpx.ConnectTimeout if "connect" in text.lower() else httpx.ReadTimeout
        return timeout(text, request=request)
    elif code == 60:
        cause = _ssl_error(ssl.SSLCertVerificationError, text)
        error = httpx.ConnectError(text, request=request)
    elif code in (35, 56):  # the TLS handshake failed, or the server ended it (no certificate)
        cause = _ssl_error(ssl.SSLError, text)
        error = httpx.ConnectError(text, request=request)
    elif code == 58:
        return PermanentError(f"curl on the server cannot use its host certificate: {text}")
    else:
        return httpx.TransportError(f"curl exited with {code}: {text}", request=request)
    error.__cause__ = cause
    return error


class HostCurlTransport(httpx.BaseTransport):
    """Sends each request with `curl` on `host`, as root, with the host's own certificate; the
    TCP connection goes to `address` (curl's `--resolve`: the server's own name is not trusted to
    resolve there, as the controller's transport trusts no DNS either)."""

    def __init__(self, host: Host, address: str) -> None:
        self.host = host
        self.address = address
        self._files: dict[str, str] | None = None

    def cert_files(self) -> dict[str, str]:
        """The host certificate, its key and the CA bundle, as Puppet on the host names them."""
        if self._files is None:
            out = self.host.run(["puppet", "config", "print", *CERT_SETTINGS], root=True)
            files = parse_config_print(out.stdout, CERT_SETTINGS)
            missing = [n for n in CERT_SETTINGS if not files.get(n)]
            if missing:
                raise PermanentError(
                    f"`puppet config print {' '.join(CERT_SETTINGS)}` on {self.host.name} did "
                    f"not name {', '.join(missing)}"
                )
            self._files = files
        return self._files

    def argv(self, request: httpx.Request, timeouts: Mapping[str, float | None]) -> list[str]:
        files = self.cert_files()
        url = request.url
        port = url.port or 443
        connect = timeouts.get("connect") or 10.0
        total = (timeouts.get("read") or 30.0) + connect
        argv = [
            "curl",
            "--silent",
            "--show-error",
            "--include",
            "--http1.1",
            "--connect-timeout",
            f"{connect:g}",
            "--max-time",
            f"{total:g}",
            "--cert",
            files["hostcert"],
            "--key",
            files["hostprivkey"],
            "--cacert",
            files["localcacert"],
            "--resolve",
            f"{url.host}:{port}:{self.address}",
            "--request",
            request.method,
        ]
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in _SECRET_HEADERS:
                raise PermanentError(
                    f"refusing to send a {name} header with curl on {self.host.name}: the "
                    "certificate is the only credential of this path"
                )
            if lowered not in _SKIPPED_HEADERS:
                argv += ["--header", f"{name}: {value}"]
        if request.content:
            argv += ["--data-binary", "@-"]
        argv.append(str(url))
        return argv

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        argv = self.argv(request, timeouts)
        body = request.read()
        limit = float(argv[argv.index("--max-time") + 1]) + 30.0
        try:
            out = self.host.run(argv, root=True, stdin=body or None, timeout=limit)
        except CommandFailed as exc:
            if exc.exit_code == 127:
                raise PermanentError(f"curl is not installed on {self.host.name}") from None
            error = _curl_error(exc.exit_code, exc.stderr, request)
            raise error from error.__cause__
        try:
            status, headers, content = parse_curl_include(out.stdout.encode())
        except ValueError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        return httpx.Response(status, headers=headers, content=content, request=request)
