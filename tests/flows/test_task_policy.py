"""Task policy: retries only for transient errors, timeouts everywhere, a resumable cache key."""

from __future__ import annotations

import inspect
import pickle

import pytest
from prefect import Task
from prefect.cache_policies import CompoundCachePolicy

import tasks.checks
import tasks.code_manager
import tasks.lab
import tasks.replica
import tasks.vms
from pe_dr.checks.result import CheckResult
from pe_dr.errors import ApiError, CheckFailed, TransientError
from tasks.checks import CheckFailedError, verdict
from tasks.common import backoff, transient_only

MODULES = [
    tasks.checks,
    tasks.code_manager,
    tasks.lab,
    tasks.replica,
    tasks.vms,
]
ALL_TASKS = list(
    {id(o): o for m in MODULES for o in vars(m).values() if isinstance(o, Task)}.values()
)


def test_every_task_has_a_timeout_and_the_transient_only_rule() -> None:
    assert len(ALL_TASKS) >= 30
    for t in ALL_TASKS:
        assert t.timeout_seconds and t.timeout_seconds > 0, t.name
        assert t.retry_condition_fn is transient_only, t.name


def test_retry_back_off_is_scaled_by_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PE_DR_RETRY_DELAY_SCALE", raising=False)
    assert backoff([10, 30]) == [10, 30]
    monkeypatch.setenv("PE_DR_RETRY_DELAY_SCALE", "0.5")
    assert backoff([10, 30]) == [5, 15]


def test_cached_tasks_are_keyed_on_inputs_source_and_root_run() -> None:
    cached = [t for t in ALL_TASKS if t.persist_result]
    assert cached, "set-up steps must be resumable"
    for t in cached:
        assert isinstance(t.cache_policy, CompoundCachePolicy), t.name
        names = {type(p).__name__ for p in t.cache_policy.policies}
        # the source: Prefect's TaskSource, or (tasks made from an action) the action's own
        assert {"Inputs", "CacheKeyFnPolicy"} <= names, (t.name, names)


def test_lab_state_checks_are_never_cached() -> None:
    for t in (tasks.lab.restore_primary, tasks.vms.start_primary_again):
        assert not t.persist_result, t.name


def test_task_inputs_are_small_values_not_clients() -> None:
    for t in ALL_TASKS:
        params = inspect.signature(t.fn).parameters
        assert next(iter(params)) == "lab", t.name
        for name, param in params.items():
            assert "Lab " not in str(param.annotation) and param.annotation != "Lab", (t.name, name)


class _State:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (TransientError("booting"), True),
        (ConnectionRefusedError(), True),
        (ApiError("code-manager", 503, "starting"), True),
        (ApiError("rbac", 401, "authentication failed"), False),
        (CheckFailed("replica behind"), False),
        (KeyError("bug"), False),
    ],
)
def test_retry_condition(exc: BaseException, retry: bool) -> None:
    assert transient_only(None, None, _State(exc)) is retry  # type: ignore[arg-type]


def test_a_failed_check_raises_with_its_evidence_and_survives_pickling() -> None:
    result = CheckResult("failover", False, "linux.vm was compiled by primary", {"runs": 3})
    with pytest.raises(CheckFailedError) as err:
        verdict(result)
    copy = pickle.loads(pickle.dumps(err.value))  # noqa: S301 (our own bytes)
    assert copy.result == result
    assert "linux.vm was compiled by primary" in str(copy)
    ok = CheckResult("health", True, "fine")
    assert verdict(ok) is ok
