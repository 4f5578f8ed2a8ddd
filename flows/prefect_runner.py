"""The Prefect runner: a sequence's steps as task runs of the current flow run (see flows/runner.py).

Each step becomes a Prefect task once (its name, run name and retries from the step); a fan-out
is a task map on the flow's task runner; the log is the run's logger, one line per step; reports
and progress are artifacts; an approval pauses the flow run; the flow runs of dead runs that a
step reaped are marked Crashed.

Many units (``each``: a run of many tenants) are one task run per unit, its steps plain calls
inside it (:class:`InlineRunner`), not one task run per step and table. (Prefect 3.8 creates a
synchronous task run in the process and reports its states as events, sent in the background:
a unit waits for no call to the API, so a busy server's ``503`` cannot fail it.) Should the task
engine itself fail before the unit's body ran, the unit runs anyway, without a task run, and the
flow's log says so: the orchestrator never decides whether a tenant is backed up.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import Task, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, TaskRun
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.approval import ask_approval
from flows.runner import LocalRunner, Runner, arguments, submit_in_context, summarize
from tasks.report import ProgressArtifact
from tasks.runs import mark_crashed
from tasks.step import Step
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.results import Approval

__all__ = ["InlineRunner", "PrefectRunner"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_TASKS: dict[int, Task[Any, Any]] = {}


def _retry_condition(step: Step[..., Any]) -> Callable[[Task[Any, Any], TaskRun, State[Any]], bool] | None:
    if step.retry_if is None:
        return None
    retry_if = step.retry_if

    def condition(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
        exc = state.result(raise_on_failure=False)
        return isinstance(exc, BaseException) and retry_if(exc)

    return condition


def as_task(step: Step[..., R]) -> Task[..., R]:
    """The Prefect task of ``step`` (made once): the step's function, logging its one-line summary."""
    made = _TASKS.get(id(step))
    if made is None:

        @functools.wraps(step.fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = step.fn(*args, **kwargs)
            label = step.label(arguments(step, args, kwargs))
            get_run_logger().info(summarize(step, label, result, time.perf_counter() - started))
            return result

        made = task(
            name=step.name,
            task_run_name=step.run_name,
            retries=step.retries,
            retry_delay_seconds=step.retry_delay_seconds,
            retry_condition_fn=_retry_condition(step),
        )(run)
        _TASKS[id(step)] = made
    return made


class PrefectRunner:
    """Runs a sequence's steps inside the current Prefect flow run."""

    own_log = True

    def __init__(self) -> None:
        self.flow_run_id: str | None = flow_run.get_id() or None

    def __call__(self, step: Step[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return as_task(step)(*args, **kwargs)

    def map(self, step: Step[..., R], items: Sequence[Any], *args: Any) -> list[R]:
        futures = as_task(step).map(list(items), *(unmapped(a) for a in args))
        wait(futures)
        return [f.result() for f in futures]

    def each(
        self,
        kind: str,
        items: Sequence[T],
        label: Callable[[T], str],
        body: Callable[[Runner, T], R],
        concurrency: int,
        failure: Callable[[R], str | None] = lambda result: None,
    ) -> list[R]:
        done: dict[int, R] = {}
        raised: dict[int, BaseException] = {}

        def unit(item: T, index: int) -> State[Any] | None:
            try:
                done[index] = body(InlineRunner(), item)
            except BaseException as exc:
                raised[index] = exc
                raise
            why = failure(done[index])
            return Failed(message=why) if why else None  # a failed item shows failed in the UI

        unit_task = task(name=kind, cache_policy=NO_CACHE)(unit)
        flow_logger = get_run_logger()

        def one(index: int) -> None:
            try:
                unit_task.with_options(task_run_name=label(items[index]))(items[index], index)
            except Exception as exc:  # noqa: BLE001 - whether the unit ran decides, below
                if index in done or index in raised:
                    return  # the unit ran: its result (or its error) stands, whatever the API said after
                flow_logger.warning(
                    f"{label(items[index])}: Prefect's task engine failed before it ran ({type(exc).__name__}: "
                    f"{exc}); running it without a task run"
                )
                done[index] = body(InlineRunner(flow_logger), items[index])

        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
            futures = [submit_in_context(pool, one, i) for i in range(len(items))]
        for future in futures:
            future.result()
        if raised:
            raise raised[min(raised)]
        return [done[i] for i in range(len(items))]

    def log(self, message: str) -> None:
        get_run_logger().info(message)

    def warn(self, message: str) -> None:
        get_run_logger().warning(message)

    def report(self, publish: Callable[..., None], *args: Any) -> None:
        publish(*args)

    def progress(self, tenant_id: str, description: str, expected_rows: int) -> AbstractContextManager[None]:
        return ProgressArtifact(tenant_id, description, expected_rows)  # type: ignore[return-value]

    def approve(self, plan: RestorePlan, timeout_seconds: int, poll_seconds: int) -> Approval:
        return ask_approval(plan, timeout_seconds, poll_seconds)

    def crashed(self, flow_run_ids: list[str], tenant_id: str, reaper: str) -> None:
        mark_crashed(flow_run_ids, tenant_id, reaper)

    def label(self, name: str, tags: list[str]) -> None:
        """Rename the flow run and add tags, once the tenant's name is known (best effort: a
        label is for people, never a reason for a backup to fail)."""
        if self.flow_run_id is None:
            return
        try:
            with get_client(sync_client=True) as client:
                current = client.read_flow_run(UUID(self.flow_run_id))
                client.update_flow_run(UUID(self.flow_run_id), name=name, tags=sorted({*current.tags, *tags}))
        except Exception as exc:  # noqa: BLE001
            self.warn(f"could not name the flow run {name!r}: {exc}")


class InlineRunner(LocalRunner):
    """One unit's steps inside its task run (see the module docstring): plain calls with the
    steps' retries, a fan-out a thread pool, the log that task run's (or ``logger``'s); reports
    are left to the caller's one summary; dead runs reaped are marked Crashed as usual."""

    own_log = True

    def __init__(self, logger: Any = None) -> None:
        from tenant_backup.settings import get_settings

        super().__init__(max_workers=get_settings().max_workers)
        self._logger = logger or get_run_logger()
        self.flow_run_id = flow_run.get_id() or None

    def log(self, message: str) -> None:
        self._logger.info(message)

    def warn(self, message: str) -> None:
        self._logger.warning(message)

    def crashed(self, flow_run_ids: list[str], tenant_id: str, reaper: str) -> None:
        mark_crashed(flow_run_ids, tenant_id, reaper)
