"""Error classification (what is worth a retry) and secret handling."""

from __future__ import annotations

import pickle

import pytest

from pe_dr import secrets
from pe_dr.errors import (
    ApiError,
    CheckFailed,
    CommandFailed,
    ConfigError,
    PeDrError,
    TransientError,
    VagrantError,
    is_transient,
)
from pe_dr.preflight import PreflightFailed


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ApiError("rbac", 401, "authentication failed"), False),
        (ApiError("classifier", 422, "missing-referents"), False),
        (ApiError("code-manager", 503, "starting"), True),
        (ApiError("gitlab", 429, "slow down"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (TransientError("booting"), True),
        (ConfigError("bad spec"), False),
        (CheckFailed("replica behind"), False),
        (CommandFailed("primary.vm", "puppet agent -t", 1, stderr="Error: lock held"), True),
        (ValueError("bug"), False),
    ],
)
def test_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_command_failed_message_names_host_command_and_last_line() -> None:
    exc = CommandFailed("replica.vm", "puppet agent -t", 4, stdout="x", stderr="a\nError: boom\n")
    assert str(exc) == "`puppet agent -t` on replica.vm exited with 4: Error: boom"


def test_secret_from_provider_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_providers", [])
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", "from-env-Passw0rd!")
    assert secrets.get_secret(secrets.PE_CONSOLE_PASSWORD) == "from-env-Passw0rd!"

    def provider(name: str) -> str | None:
        return "from-block-Passw0rd!" if name == secrets.PE_CONSOLE_PASSWORD else None

    monkeypatch.setattr(secrets, "_providers", [provider])
    assert secrets.get_secret(secrets.PE_CONSOLE_PASSWORD) == "from-block-Passw0rd!"
    monkeypatch.setenv("GITLAB_ROOT_PASSWORD", "gitlab-env-Passw0rd!")
    assert secrets.get_secret(secrets.GITLAB_ROOT_PASSWORD) == "gitlab-env-Passw0rd!"


def test_missing_secret_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITLAB_ROOT_PASSWORD", raising=False)
    monkeypatch.setattr(secrets, "_providers", [])
    with pytest.raises(ConfigError) as err:
        secrets.get_secret(secrets.GITLAB_ROOT_PASSWORD)
    assert "gitlab-root-password" in str(err.value)
    assert "GITLAB_ROOT_PASSWORD" in str(err.value)


def test_scrub_hides_every_remembered_secret() -> None:
    token = secrets.remember("0QX-token-value-123456")
    text = f"curl -H 'X-Authentication: {token}' failed; token={token}"
    assert token not in secrets.scrub(text)
    assert secrets.scrub(text).count(secrets.MASK) == 2
    assert secrets.scrub("nothing secret here") == "nothing secret here"


@pytest.mark.parametrize(
    "error",
    [
        ApiError("classifier API on primary.vm:4433", 503, "busy", kind="unavailable"),
        CommandFailed("primary.vm", "puppet-code deploy", 1, stderr="Error: no token"),
        VagrantError("vagrant up failed", stderr="locked", transient=True),
        PreflightFailed(["one problem", "another"]),
        TransientError("booting"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_survives_the_result_store(error: PeDrError) -> None:
    """Prefect pickles a failed step's exception to result storage and a Retry reads it back:
    ApiError's own __init__ once made that read fail ("missing 2 required positional
    arguments") and the journal showed that instead of the failure."""
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
    assert is_transient(copy) is is_transient(error)
