"""Secrets: where they come from, and scrubbing them out of any text we show.

Providers (the Prefect Secret block lookup is registered by the tasks layer) are asked first, then
the environment. Every secret seen is remembered so that `scrub` can take it out of messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from pe_dr.errors import ConfigError

PE_CONSOLE_PASSWORD = "pe-console-password"  # noqa: S105 (a block name)
GITLAB_ROOT_PASSWORD = "gitlab-root-password"  # noqa: S105 (a block name)

ENV_NAMES = {
    PE_CONSOLE_PASSWORD: "PE_CONSOLE_PASSWORD",
    GITLAB_ROOT_PASSWORD: "GITLAB_ROOT_PASSWORD",
}

Provider = Callable[[str], str | None]

_providers: list[Provider] = []
_known: set[str] = set()
_lock = threading.Lock()
MASK = "********"


def register_provider(provider: Provider) -> None:
    """Add a lookup tried before the environment (e.g. Prefect Secret blocks)."""
    with _lock:
        if provider not in _providers:
            _providers.append(provider)


def get_secret(name: str) -> str:
    """The secret called `name`, from a provider or the environment; ConfigError when unset."""
    env = ENV_NAMES.get(name, name.upper().replace("-", "_"))
    for provider in list(_providers):
        value = provider(name)
        if value:
            return _one_line(name, remember(value), f"the Prefect Secret block {name!r}")
    value = os.environ.get(env, "")
    if value:
        return _one_line(name, remember(value), f"the environment variable {env}")
    raise ConfigError(
        f"the secret {name!r} is not set: create the Prefect Secret block {name!r} "
        f"or set the environment variable {env}"
    )


# every character str.splitlines() breaks at (a pasted password can carry U+2028 too)
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _one_line(name: str, value: str, where: str) -> str:
    """A secret goes into headers, files and command input whole: a line break (a pasted
    password with its newline) would split it, or smuggle a second header or command."""
    if "\0" in value or any(ch in _LINE_BREAKS for ch in value):
        raise ConfigError(
            f"the secret {name!r} ({where}) contains a line break or NUL: set it without one"
        )
    return value


def remember(value: str) -> str:
    """Register a secret value (a password, a token, a key) so that `scrub` hides it."""
    value = value.strip()
    if len(value) >= 6:
        with _lock:
            _known.add(value)
    return value


def scrub(text: str) -> str:
    """`text` with every remembered secret replaced by a mask."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
