"""pe-dr's settings: environment variables named `PE_DR_<FIELD>`, all of them here, each described.

Read afresh at each use (`settings()`), so a worker's job variables and a test's environment
apply; a bad value is one sentence naming the variable (ConfigError: exit code 2). Secrets are not
settings: they come from Prefect Secret blocks or their own variables (pe_dr.secrets).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pe_dr.errors import ConfigError

PREFIX = "PE_DR_"
DAY = 24 * 3600.0
# Prefect's shortest window for a proactive trigger is 10 s (a test's window; a lab's is weeks)
OVERDUE_MIN_DAYS = 10 / DAY
OVERDUE_MAX_DAYS = 366.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", allow_inf_nan=False
    )

    lab_spec: Path | None = Field(
        default=None,
        description="The lab spec (TOML) used when no --spec or `lab` parameter names one; "
        "without either, the tutorial's lab.",
    )
    max_parallel_agents: int = Field(
        default=64, ge=1, le=1024, description="How many agents a check runs Puppet on at once."
    )
    lab_lock_wait_seconds: float = Field(
        default=1800.0,
        gt=0,
        le=DAY,
        description="How long a drill waits for another drill of the same lab.",
    )
    stop_grace_seconds: float = Field(
        default=25.0,
        ge=1,
        le=600,
        description="After Ctrl-C or SIGTERM, how long `pe-dr drill` may take to start the "
        "primary again and write the journal before it leaves anyway.",
    )
    retry_delay_scale: float = Field(
        default=1.0,
        ge=0.001,
        le=100,
        description="Multiplier on every step's retry back-off: above 1 for a slow lab; "
        "labsim's drill sets 0.01.",
    )
    rerun_command: str | None = Field(
        default=None,
        max_length=200,
        description="For a lab that does not outlive the command that drills it (`labsim drill` "
        "sets it): a failed or stopped run cannot be retried, and its closing advice names this "
        "command instead of `pe-dr retry`.",
    )
    drill_cron: str = Field(
        default="0 3 1 * *",
        description="When the monthly drill deployment runs (cron: five fields, minute first).",
    )
    drill_timezone: str = Field(default="UTC", description="The time zone of `drill_cron`.")
    overdue_days: float = Field(
        default=35.0,
        description="`pe-dr setup --notify`: notify when no drill of the lab has passed for this "
        "many days (a monthly drill plus a few days' grace; fractions allowed).",
    )
    work_pool: str = Field(
        default="pe-dr-lab",
        description="The process work pool of the deployments (prefect.yaml, `prefect deploy`).",
    )
    # Read by a worker's shell through prefect.yaml, never by pe-dr itself; listed to be described.
    home: Path | None = Field(
        default=None,
        description="On a worker host: this project's checkout, where its flow runs start "
        "(prefect.yaml's `pull` step and `command`).",
    )
    python: Path | None = Field(
        default=None,
        description="On a worker host: the Python that runs flow runs, when it is not "
        "`$PE_DR_HOME/.venv/bin/python`.",
    )

    @field_validator("overdue_days")
    @classmethod
    def _overdue_window(cls, days: float) -> float:
        if not OVERDUE_MIN_DAYS <= days <= OVERDUE_MAX_DAYS:
            raise ValueError(
                f"must be a number of days from {OVERDUE_MIN_DAYS:.6f} (10 s, the shortest window "
                f"a proactive trigger takes) to {OVERDUE_MAX_DAYS:g}"
            )
        return days


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def settings() -> Settings:
    """The settings from the environment now."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{env_name(field)}={first.get('input')!r}: {message.lower()}") from None
