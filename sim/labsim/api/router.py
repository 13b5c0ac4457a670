"""The router of labsim's HTTP APIs: a service is a table of routes, each a method and a path
pattern to a handler. The first route whose pattern matches the whole path and whose method fits
answers; the service's guard (its authentication) runs before every route but its public ones,
and before the answer for a path no route has, as the real services check the caller first."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labsim.http import Request, Response

if TYPE_CHECKING:
    from labsim.lab import VM, Lab
    from labsim.state import GitLabState, PEState


@dataclass
class Call:
    """One request to one service on one VM, with what the guard and the route found."""

    lab: Lab
    vm: VM
    req: Request
    port: int = 0
    match: re.Match[str] | None = None
    caller: dict[str, Any] | None = None  # the guard's authenticated user
    body: dict[str, Any] = field(default_factory=dict)  # the guard's parsed body (GitLab)

    @property
    def pe(self) -> PEState:
        pe = self.lab.pe
        assert pe is not None  # PE's services listen only once it is installed
        return pe

    @property
    def gitlab(self) -> GitLabState:
        gitlab = self.lab.gitlab
        assert gitlab is not None  # as GitLab's
        return gitlab

    def group(self, n: int) -> str:
        assert self.match is not None
        return self.match.group(n)


Handler = Callable[[Call], "Response | Awaitable[Response]"]
Guard = Callable[[Call], "Response | None"]  # a refusal, or None to go on


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]  # "*": any
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False  # answered without the guard


def route(methods: str, pattern: str, handler: Handler, *, public: bool = False) -> Route:
    """`route("GET POST", r"/v1/groups", handler)`: `methods` space-separated, or "*"."""
    return Route(frozenset(methods.split()), re.compile(pattern), handler, public)


def _path(req: Request) -> str:
    return req.path


@dataclass(frozen=True)
class Router:
    routes: Sequence[Route]
    not_found: Callable[[Request], Response]
    guard: Guard | None = None
    path: Callable[[Request], str] = _path  # what the patterns match

    async def __call__(self, lab: Lab, vm: VM, req: Request, port: int = 0) -> Response:
        call = Call(lab, vm, req, port)
        path = self.path(req)
        found = None
        for r in self.routes:
            match = r.pattern.fullmatch(path)
            if match and ("*" in r.methods or req.method in r.methods):
                found, call.match = r, match
                break
        if not (found and found.public) and self.guard is not None:
            refused = self.guard(call)
            if refused is not None:
                return refused
        if found is None:
            return self.not_found(req)
        answer = found.handler(call)
        return await answer if inspect.isawaitable(answer) else answer


def err(status: int, kind: str, msg: str) -> Response:
    """PE's error body, `{"kind", "msg"}`."""
    return Response.json({"kind": kind, "msg": msg}, status)


def no_route(req: Request) -> Response:
    return err(404, "not-found", f"no route {req.method} {req.path}")


def not_found(req: Request) -> Response:
    return err(404, "not-found", req.path)


def outcome(status: int) -> str:
    """A journal entry's outcome for an answer's status."""
    return "ok" if status < 400 else ("refused" if status in (401, 403) else "failed")


def token_invalid() -> Response:
    return err(
        401,
        "puppetlabs.rbac/token-invalid",
        "Authentication is required to access this resource: the token is invalid, "
        "expired or revoked.",
    )
