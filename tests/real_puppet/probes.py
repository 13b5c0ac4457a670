"""Probes and faults on primary.vm:8140: a TLS status read, and listeners that stand in for a
primary that hangs, never answers HTTP, or answers 503."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from tier import PORT


def simple_status(address: str, name: str, ca_file: Path, timeout: float = 3.0) -> str | None:
    """GET /status/v1/simple on address:8140, TLS verified against the lab CA as `name`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((address, PORT), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=name) as tls,
        ):
            tls.sendall(
                f"GET /status/v1/simple HTTP/1.1\r\nHost: {name}:{PORT}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while len(data) < 65536:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode(errors="replace").strip()


class Listener:
    """Something on primary.vm:8140 that is not Puppet Server: `hung` accepts TCP connections and
    never sends a byte (as a host whose server process froze); `silent` completes TLS with the
    primary's own certificate, reads the request and never answers it; `503` completes TLS and
    answers every request 503 Service Unavailable."""

    def __init__(self, kind: str, address: str, cert: Path, key: Path) -> None:
        if kind not in ("hung", "silent", "503"):
            raise ValueError(kind)
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, PORT))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.held: list[socket.socket] = []
        self.requests = 0
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name=f"listener-{kind}", daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.kind == "hung":
                self.held.append(conn)  # never answered, closed when the listener stops
                continue
            worker = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _answer(self, conn: socket.socket) -> None:
        body = b"Service Unavailable: pe-dr-drill test listener\n"
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            conn.settimeout(10)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                if self.kind == "silent":
                    # hold the connection, answer nothing, until the client gives up or we stop
                    while not self._stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            tls.settimeout(0.2)
                            if not tls.recv(4096):
                                return
                    return
                tls.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + b"Connection: close\r\n\r\n"
                    + body
                )

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accept.join(5)
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        for worker in self._threads:
            worker.join(12)
