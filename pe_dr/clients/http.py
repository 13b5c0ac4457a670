"""HTTP plumbing shared by the PE and GitLab clients: lab-aware TLS transport and error mapping.

The controller never relies on its own DNS: `lab_transport` opens TCP to the lab spec's address of a
VM name while TLS uses the name itself (SNI, certificate checked against the lab CA). `send` and
`request_json` turn every failure into a `TransientError`, a `PermanentError` or an `ApiError`
whose one-sentence message names the host and never carries a secret or a query string.
"""

from __future__ import annotations

import errno
import json
import ssl
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Required, Self, TypedDict

import httpx

from pe_dr.errors import ApiError, PeDrError, PermanentError, TransientError
from pe_dr.secrets import remember, scrub

__all__ = [
    "ApiClient",
    "Connection",
    "LabTransport",
    "error_message",
    "lab_ssl_context",
    "lab_transport",
    "request_json",
    "safe_url",
    "send",
]

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


# CA PEM (None: the system store) -> its client context. Building one costs 20-80 ms (the system
# store is parsed each time), and every PE or GitLab client built one; a context is meant to be
# shared by connections, and nothing here changes it after it is made.
_contexts: dict[bytes | None, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def lab_ssl_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """A verifying client context: trusts only the lab CA when given, the system store otherwise
    (one per CA and process)."""
    with _contexts_lock:
        context = _contexts.get(ca_pem)
        if context is None:
            if ca_pem is None:
                context = ssl.create_default_context()
            else:
                context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
            _contexts[ca_pem] = context
        return context


class LabTransport(httpx.BaseTransport):
    """Dials the lab address of a mapped host name and keeps the name for TLS: the request goes
    to the address with httpx's documented `sni_hostname` extension, so SNI and certificate
    verification use the name, and the Host header (set when the request was built) keeps it
    too. Other names resolve normally.

    One pool per name: httpcore pools connections by address and port, and two names on one
    address must never share a connection verified for the other."""

    def __init__(self, host_map: Mapping[str, str], ssl_context: ssl.SSLContext) -> None:
        self._host_map = {name.lower(): address for name, address in host_map.items()}
        self._ssl_context = ssl_context
        self._pools: dict[str, httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def address_of(self, host: str) -> str:
        return self._host_map.get(host.lower(), host)

    def _pool(self, name: str) -> httpx.HTTPTransport:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                pool = httpx.HTTPTransport(
                    verify=self._ssl_context, trust_env=False, limits=_LIMITS
                )
                self._pools[name] = pool
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.lower()
        address = self._host_map.get(name)
        if address is not None:  # (a copy: the caller's request, and its errors, keep the name)
            request = httpx.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": request.url.host},
            )
        return self._pool(name).handle_request(request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def lab_transport(host_map: Mapping[str, str], ca_pem: bytes | None) -> httpx.BaseTransport:
    """A transport that dials `host_map[name]` and verifies TLS for `name` against the lab CA."""
    return LabTransport(host_map, lab_ssl_context(ca_pem))


# --- error mapping ---------------------------------------------------------------------------


def safe_url(url: httpx.URL | str) -> str:
    """`url` without query string, fragment or user info: what may appear in a message."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(query=None, fragment=None, username=None, password=None))


def _host_port(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_VERIFY_REASONS = {
    # X509_V_ERR_* codes (OpenSSL x509_vfy.h)
    10: "the certificate has expired",
    9: "the certificate is not yet valid",
    18: "unknown CA (the certificate is self-signed)",
    19: "unknown CA (the chain ends in a CA that is not the lab CA)",
    20: "unknown CA (the certificate is not signed by the lab CA)",
    21: "unknown CA (the certificate is not signed by the lab CA)",
}


def _tls_reason(err: ssl.SSLCertVerificationError) -> str:
    code = getattr(err, "verify_code", None)
    text = (getattr(err, "verify_message", None) or err.reason or str(err)).strip().rstrip(".")
    if code == 62 or "Hostname mismatch" in text:  # X509_V_ERR_HOSTNAME_MISMATCH
        return text.split(", ", 1)[-1] if ", " in text else text
    if code == 64:  # X509_V_ERR_IP_ADDRESS_MISMATCH
        return text.split(", ", 1)[-1] if ", " in text else text
    if code in _VERIFY_REASONS:
        return _VERIFY_REASONS[code]
    return text


def _os_reason(err: OSError) -> str:
    names = {
        errno.ECONNREFUSED: "connection refused",
        errno.ECONNRESET: "connection reset",
        errno.EHOSTUNREACH: "no route to host",
        errno.ENETUNREACH: "network unreachable",
        errno.ETIMEDOUT: "connection timed out",
    }
    if err.errno in names:
        return names[err.errno]
    if err.strerror:
        return err.strerror[0].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


def _transport_error(exc: httpx.TransportError, url: httpx.URL) -> PeDrError:
    where = _host_port(url)
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting")
        return TransientError(f"{where} did not answer in time ({phase}, {safe_url(url)})")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return PermanentError(f"TLS verification of {where} failed: {_tls_reason(cause)}")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or str(cause)).replace("_", " ").lower()
            return TransientError(f"TLS handshake with {where} failed: {reason}")
    if isinstance(exc, httpx.ConnectError):
        reason = next(
            (_os_reason(c) for c in _causes(exc) if isinstance(c, OSError)),
            str(exc) or "connection failed",
        )
        return TransientError(f"cannot reach {where}: {reason}")
    detail = str(exc) or type(exc).__name__
    return TransientError(f"the connection to {where} failed ({detail}, {safe_url(url)})")


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The service's own message and kind from an error response (PE or GitLab body shapes)."""
    kind: str | None = None
    message = ""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        kind = body.get("kind") if isinstance(body.get("kind"), str) else None
        for key in ("msg", "message", "error_description", "error"):
            value = body.get(key)
            if value:
                message = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                break
    if not message:
        text = response.text.strip() if body is None else ""
        message = text.splitlines()[0][:200] if text else (response.reason_phrase or "no message")
    return message, kind


def _status_error(response: httpx.Response, service: str, method: str) -> ApiError:
    message, kind = error_message(response)
    where = f"{method} {response.request.url.path}"
    status = response.status_code
    if status == 401:
        text = f"authentication failed, the credentials or token were refused ({message}; {where})"
    elif status == 403:
        text = f"permission denied ({message}; {where})"
    else:
        text = f"{message} ({where})"
    return ApiError(service, status, scrub(text), kind=kind)


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    service: str,
    accept: Collection[int] = (),
    **kw: Any,
) -> httpx.Response:
    """Send one request; a 2xx status or one in `accept` is returned, anything else raises.

    Raises TransientError (unreachable, timeout), PermanentError (TLS verification) or ApiError.
    """
    target = httpx.URL(url)
    try:
        response = client.request(method, url, **kw)
    except httpx.TransportError as exc:
        err = _transport_error(exc, target)
        raise type(err)(scrub(err.message)) from exc
    if response.is_success or response.status_code in accept:
        return response
    raise _status_error(response, service, method)


def request_json(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    service: str,
    accept: Collection[int] = (),
    **kw: Any,
) -> Any:
    """`send`, then the parsed JSON body (None for an empty body)."""
    response = send(client, method, url, service=service, accept=accept, **kw)
    if not response.content.strip():
        return None
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise PermanentError(
            f"{service} answered {method} {safe_url(response.request.url)} with a body that is "
            "not JSON"
        ) from None


class Connection(TypedDict, total=False):
    """What every client takes besides its service's address: the lab's addresses of its VM
    names, the token sent with each request (None: anonymous), the timeout of each request, and
    the transport (None: the lab's)."""

    host_map: Required[Mapping[str, str]]
    token: str | None
    timeout: float
    transport: httpx.BaseTransport | None


class ApiClient:
    """Base of the service clients: one `httpx.Client`, closed by `close()` or a `with` block."""

    def __init__(
        self,
        *,
        host_map: Mapping[str, str],
        ca_pem: bytes | None,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport` None: the lab's (`lab_transport(host_map, ca_pem)`)."""
        self.timeout = timeout
        self._http = httpx.Client(
            transport=transport if transport is not None else lab_transport(host_map, ca_pem),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )
        self.token = token

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The header a service reads its token from; each client names its own.
    token_header = ""

    @property
    def token(self) -> str | None:
        """The token sent with every request (None: anonymous)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = remember(value) if value else None
        self._set_header(self.token_header, self._token)

    def _set_header(self, name: str, value: str | None) -> None:
        if value:
            self._http.headers[name] = remember(value)
        else:
            self._http.headers.pop(name, None)
