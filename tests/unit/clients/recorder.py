"""The httpx.MockTransport handler both API clients' tests stand on: it records every request and
leaves the routing to the fake of each API."""

from __future__ import annotations

import json
from typing import Any

import httpx


class Recorder:
    """Records every request, then answers it with `answer` (the routes of the fake's API)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)
