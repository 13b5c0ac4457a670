"""A minimal HTTP/1.1 server and client over asyncio streams (TLS optional)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    # the certname (CN) of the client certificate the TLS handshake verified, if one was sent
    client_cert: str | None = None

    @property
    def path(self) -> str:
        return urllib.parse.unquote(self.target.split("?", 1)[0])

    @property
    def raw_path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        if "?" not in self.target:
            return {}
        return dict(urllib.parse.parse_qsl(self.target.split("?", 1)[1], keep_blank_values=True))

    def json(self) -> Any:
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            return dict(urllib.parse.parse_qsl(self.body.decode()))
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    """One listener; close() drops every open connection too."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(
            self._conn, host, port, ssl=self.ssl_ctx, reuse_address=True
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        certname = _peer_certname(writer)
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    break
                req.client_cert = certname
                try:
                    resp = await self.handler(req)
                except Exception as exc:
                    resp = Response.json({"kind": "server-error", "msg": str(exc)}, 500)
                keep = req.headers.get("connection", "").lower() != "close"
                head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
                hdrs = dict(resp.headers)
                hdrs["Content-Length"] = str(len(resp.body))
                hdrs["Connection"] = "keep-alive" if keep else "close"
                head += [f"{k}: {v}" for k, v in hdrs.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + resp.body)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


def _peer_certname(writer: asyncio.StreamWriter) -> str | None:
    """The common name of a verified client certificate (Puppet's certname is the CN)."""
    peer = writer.get_extra_info("peercert")
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


async def read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    """An HTTP/1.1 message's header lines up to the blank line, names lower-cased."""
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) < 2:
        return None
    method, target = parts[0], parts[1]
    headers = await read_headers(reader)
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    return Request(method, target, headers, body)


class ConnectTimeout(TimeoutError):
    """The server accepted TCP but did not complete the connection (TLS) in time."""


class Options(TypedDict, total=False):
    """What `request` and `exchange` take beyond the address, port, method and path."""

    server_name: str | None
    ssl_ctx: ssl.SSLContext | None
    headers: dict[str, str] | None
    body: bytes
    timeout: float
    connect_timeout: float | None


async def request(
    address: str, port: int, method: str, path: str, **options: Unpack[Options]
) -> tuple[int, bytes]:
    """One HTTP request; raises OSError (e.g. ConnectionRefusedError), ssl.SSLError,
    ConnectTimeout (connecting took longer than `connect_timeout`) or TimeoutError."""
    status, _, data = await exchange(address, port, method, path, **options)
    return status, data


async def exchange(
    address: str,
    port: int,
    method: str,
    path: str,
    *,
    server_name: str | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
    connect_timeout: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """`request`, with the answer's headers (names lower-cased)."""

    async def run() -> tuple[int, dict[str, str], bytes]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    address, port, ssl=ssl_ctx, server_hostname=server_name if ssl_ctx else None
                ),
                connect_timeout if connect_timeout is not None else timeout,
            )
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {address}:{port} timed out") from None
        try:
            hdrs = {"Host": server_name or address, "Connection": "close"}
            hdrs.update(headers or {})
            hdrs["Content-Length"] = str(len(body))
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in hdrs.items()
            )
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionResetError("connection closed by peer")
            status = int(status_line.split()[1])
            rh = await read_headers(reader)
            if "content-length" in rh:
                data = await reader.readexactly(int(rh["content-length"]))
            else:
                data = await reader.read()
            return status, rh, data
        finally:
            writer.close()

    return await asyncio.wait_for(run(), timeout)
