"""The task factory: one signature per action, the lab opened around it, a cache key of the
inputs, the action's own source, the step's name and the root run."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.cache_policies import CacheKeyFnPolicy

import tasks.common
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from tasks.checks import check_health
from tasks.code_manager import ensure_admin_token, ensure_code_deployed
from tasks.common import action_task


def _key_fn(t: Any) -> Any:
    (fn_policy,) = [p for p in t.cache_policy.policies if isinstance(p, CacheKeyFnPolicy)]
    return fn_policy.cache_key_fn


def _key(t: Any, name: str | None = None) -> str:
    context = SimpleNamespace(task=SimpleNamespace(name=name or t.name))
    return str(_key_fn(t)(context, {}))


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.common, "root_flow_run_id", lambda: "run-1")


def test_the_task_keeps_the_actions_signature_with_the_lab_spec_first() -> None:
    params = inspect.signature(ensure_admin_token.fn).parameters
    assert list(params) == ["lab", "server"]
    assert params["lab"].annotation is LabSpec
    assert params["server"].default is None
    assert ensure_admin_token.name == "ensure-admin-token"
    # keyword-only stays keyword-only: `check_health(spec, True)` would not bind
    health = inspect.signature(check_health.fn).parameters
    assert health["expect_replica"].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_key_changes_with_the_step_name_the_source_and_the_root_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _key(ensure_code_deployed)
    assert key == _key(ensure_code_deployed)
    assert "run-1" in key
    assert _key(ensure_code_deployed, "code-deploy-on-new-primary") != key
    monkeypatch.setattr(tasks.common, "root_flow_run_id", lambda: "run-2")
    assert _key(ensure_code_deployed) != key

    def one(lab: Lab) -> str:
        return "one"

    def two(lab: Lab) -> str:
        return "two"

    first = action_task(one, timeout=1, name="same")
    second = action_task(two, timeout=1, name="same")
    assert _key(first) != _key(second), "the action's own source is in the key"


def test_the_action_runs_on_a_live_lab_and_its_result_passes_through_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []

    class FakeLab:
        def __init__(self, spec: LabSpec) -> None:
            self.spec = spec

        def __enter__(self) -> FakeLab:
            seen.append("open")
            return self

        def __exit__(self, *exc: object) -> None:
            seen.append("closed")

    monkeypatch.setattr(tasks.common, "Lab", FakeLab)

    def probe(lab: Lab, vm: str, *, deep: bool = False) -> str:
        seen.append((type(lab).__name__, vm, deep))
        return f"{vm} ok"

    t = action_task(probe, timeout=1, then=str.upper)
    spec = LabSpec()
    assert t.fn(spec, "linux.vm", deep=True) == "LINUX.VM OK"
    assert seen == ["open", ("FakeLab", "linux.vm", True), "closed"]


def test_checks_are_tagged_so_the_journal_reads_only_their_results() -> None:
    from tasks.common import CHECK_TAG, named

    assert CHECK_TAG in check_health.tags
    assert CHECK_TAG in named(check_health, "health-gate").tags
    assert CHECK_TAG not in ensure_admin_token.tags
