"""What every drill task shares: retries on transient errors only, timeouts, a resumable cache.

The cache key is the task's inputs and source plus the ROOT flow run id: a Retry of the same run
(even of a re-created subflow) skips completed steps; a new run does everything again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun

from pe_dr.errors import is_transient
from pe_dr.lab.live import Lab
from pe_dr.lab.spec import LabSpec
from pe_dr.settings import settings
from tasks.progress import ON_FINISHED, ON_RUNNING

P = ParamSpec("P")
R = TypeVar("R")


def root_flow_run_id() -> str:
    """The id of the current flow run's root run (the run itself when it has no parent)."""
    from prefect.runtime import flow_run

    return _root_of(str(flow_run.id))


# A run's root never changes, and finding it costs up to three API reads for a subflow (about
# 0.1 s per task); a served process runs many flows, hence a bound.
@functools.lru_cache(maxsize=256)
def _root_of(run_id: str) -> str:
    from prefect.runtime import flow_run

    return str(flow_run.root_flow_run_id or run_id)


def _root_flow_run(context: Any, parameters: dict[str, Any]) -> str:
    return f"root-{root_flow_run_id()}"


RESUMABLE: CachePolicy = INPUTS + TASK_SOURCE + CachePolicy.from_cache_key_fn(_root_flow_run)


def backoff(delays: Sequence[float]) -> list[float]:
    """Prefect fixes a task's retry delays when the task is defined, so the setting is read
    then: at import of the tasks."""
    scale = settings().retry_delay_scale
    return [d * scale for d in delays]


def transient_only(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what another attempt can fix; a 401 or a failed check fails at once."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return True


def lab_task(
    *,
    timeout: float,
    retries: int = 3,
    delays: Sequence[float] = (10, 30, 90),
    cache: bool = True,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        step = fn.__name__.replace("_", "-")
        policy = RESUMABLE if cache else NO_CACHE
        return _drill_task(fn, step, timeout, retries, delays, policy, cache)

    return wrap


CHECK_TAG = "pe-dr:check"


def _drill_task(
    fn: Callable[P, R],
    step: str,
    timeout: float,
    retries: int,
    delays: Sequence[float],
    policy: CachePolicy,
    persist: bool,
    tags: Sequence[str] = (),
) -> Task[P, R]:
    """The policy every drill task shares: transient errors only are retried, with jittered
    back-off; a timeout; the step's name in Prefect; the progress hooks."""
    return task(
        name=step,
        task_run_name=step,
        retries=retries,
        retry_delay_seconds=backoff(delays),
        retry_jitter_factor=0.2,
        retry_condition_fn=transient_only,
        timeout_seconds=timeout,
        cache_policy=policy,
        persist_result=persist,
        tags=list(tags),
        on_running=ON_RUNNING,
        on_completion=ON_FINISHED,
        on_failure=ON_FINISHED,
    )(fn)


def action_task(
    action: Callable[Concatenate[Lab, P], R],
    *,
    timeout: float,
    retries: int = 3,
    delays: Sequence[float] = (10, 30, 90),
    cache: bool = True,
    name: str | None = None,
    then: Callable[[R], R] | None = None,
) -> Task[Concatenate[LabSpec, P], R]:
    """The Prefect task of one core action `action(lab: Lab, ...)`: the same signature with the
    lab spec in place of the live lab (so the form, the cache inputs and mypy all see the
    action's own parameters), the lab opened and closed around each attempt, `then` applied to
    the result (a check's verdict: such a task is tagged CHECK_TAG, the journal reads the
    results of those only). Its cache key is the inputs, the action's own source, the
    step's name (a flow may run one action as several steps) and the root flow run."""
    step = name or action.__name__.replace("_", "-")
    source = hashlib.sha256(inspect.getsource(action).encode()).hexdigest()[:16]

    @functools.wraps(action)
    def run(lab: LabSpec, *args: P.args, **kwargs: P.kwargs) -> R:
        with Lab(lab) as live:
            result = action(live, *args, **kwargs)
        return then(result) if then is not None else result

    signature = inspect.signature(action)
    first, *rest = signature.parameters.values()
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first.replace(name="lab", annotation=LabSpec), *rest]
    )

    def _key(context: Any, parameters: dict[str, Any]) -> str:
        return f"{source}-{context.task.name}-root-{root_flow_run_id()}"

    policy = INPUTS + CachePolicy.from_cache_key_fn(_key) if cache else NO_CACHE
    tags = (CHECK_TAG,) if then is not None else ()
    return _drill_task(run, step, timeout, retries, delays, policy, cache, tags)


T = TypeVar("T", bound=Task[Any, Any])


def named(step: T, name: str) -> T:
    """The task as step `name`: what the journal calls a step is what Prefect shows, and the
    name is part of the cache key (one action may run as several steps)."""
    if step.name == name:
        return step
    return step.with_options(name=name, task_run_name=name)  # type: ignore[return-value]
