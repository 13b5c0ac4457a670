"""Client side of the daemon's control socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ControlError(RuntimeError):
    pass


def stream(
    state_dir: Path, request: dict[str, Any], timeout: float | None = 30.0
) -> Iterator[dict[str, Any]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(state_dir / "control.sock"))
    except OSError as exc:
        sock.close()
        raise ControlError(
            f"the lab daemon of {state_dir} is not running ({exc.strerror})"
        ) from None
    try:
        sock.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield json.loads(line)
    finally:
        sock.close()


def call(state_dir: Path, request: dict[str, Any], timeout: float | None = 30.0) -> dict[str, Any]:
    for msg in stream(state_dir, request, timeout):
        if "internal" in msg:
            raise ControlError(
                f"the lab daemon failed: {msg['internal']} (its traceback: {state_dir}/daemon.log)"
            )
        return msg
    raise ControlError("the lab daemon closed the connection")
