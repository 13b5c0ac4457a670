"""PE's APIs on primary.vm as the PEClient tests script them: canned answers per route."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ..recorder import Recorder

TOKEN = "0VZnKMTkVqcBh1X7JkP9-admin-token"
SERVER = "primary.vm"

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakePE(Recorder):
    """Routes (method, host:port, path) to canned answers and records every request."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str, str], Answer] = {}

    def on(self, method: str, port: int, path: str, answer: Answer) -> None:
        self.routes[(method, f"{SERVER}:{port}", path)] = answer

    def on_error(self, method: str, path: str, status: int, kind: str, msg: str) -> None:
        """PE's error body (`kind`, `msg`) with `status`, on the console services' port."""
        self.on(method, 4433, path, httpx.Response(status, json={"kind": kind, "msg": msg}))

    def on_created(self, path: str, location: str, status: int = 201) -> None:
        """A POST to `path` on the console services' port creates what `location` names."""
        self.on("POST", 4433, path, httpx.Response(status, headers={"Location": location}))

    def answer(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, f"{request.url.host}:{request.url.port}", request.url.path)
        answer = self.routes.get(key)
        if answer is None:
            return httpx.Response(404, json={"kind": "not-found", "msg": f"no route {key}"})
        return answer(request) if callable(answer) else answer


def sent(fake: FakePE, method: str, url: str) -> None:
    assert fake.last.method == method
    assert str(fake.last.url) == url
    assert fake.last.headers["X-Authentication"] == TOKEN
