"""Settings: every PE_DR_ variable in one model, described, read afresh, refused in one sentence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pe_dr.errors import ConfigError
from pe_dr.settings import Settings, env_name, settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)
    assert settings().max_parallel_agents == 64
    assert settings().lab_spec is None
    monkeypatch.setenv("PE_DR_MAX_PARALLEL_AGENTS", "8")
    monkeypatch.setenv("PE_DR_LAB_SPEC", "/srv/lab.toml")
    monkeypatch.setenv("PE_DR_LAB_LOCK_WAIT_SECONDS", "")  # empty is unset
    current = settings()
    assert current.max_parallel_agents == 8
    assert current.lab_spec == Path("/srv/lab.toml")
    assert current.lab_lock_wait_seconds == 1800.0


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PE_DR_MAX_PARALLEL_AGENTS", "0", "greater than or equal to 1"),
        ("PE_DR_MAX_PARALLEL_AGENTS", "many", "valid integer"),
        ("PE_DR_LAB_LOCK_WAIT_SECONDS", "-5", "greater than 0"),
        ("PE_DR_STOP_GRACE_SECONDS", "soon", "valid number"),
        ("PE_DR_RETRY_DELAY_SCALE", "0", "greater than or equal to 0.001"),
        ("PE_DR_LAB_LOCK_WAIT_SECONDS", "inf", "finite number"),
        ("PE_DR_LAB_LOCK_WAIT_SECONDS", "1e308", "less than or equal to 86400"),
        ("PE_DR_STOP_GRACE_SECONDS", "nan", "finite number"),
        ("PE_DR_STOP_GRACE_SECONDS", "0.001", "greater than or equal to 1"),
        ("PE_DR_MAX_PARALLEL_AGENTS", "100000", "less than or equal to 1024"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        settings()
    message = str(refused.value)
    assert message.startswith(f"{name}={value!r}: ") and words in message
    assert "\n" not in message


def test_every_setting_is_described_here_and_in_the_readme() -> None:
    documented = set(re.findall(r"^\| `(PE_DR_[A-Z_]+)` \|", README.read_text(), re.M))
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert env_name(name) in documented, f"README's Settings table lacks {env_name(name)}"
