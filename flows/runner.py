"""What runs a flow's steps: the one composition of each flow (``flows/sequences``) calls its steps
through a runner, so the same sequence serves a Prefect flow run and a command line without a
Prefect server.

- :class:`LocalRunner` (this module, no Prefect import): each step is a plain call, with the
  step's retries; a fan-out runs in a thread pool; the log goes to Python logging; reports and
  progress artifacts are left out (the CLI prints its own); an approval cannot be asked.
- ``PrefectRunner`` (``flows/prefect_runner.py``): each step is a Prefect task run, a fan-out a
  task map, the log the run's logger, reports and progress Prefect artifacts, an approval a
  paused flow run.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

from tasks.step import Step
from tenant_backup.errors import ConfigurationError
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.results import Approval

__all__ = ["LocalRunner", "Runner", "submit_in_context"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("tenant_backup")


class Runner(Protocol):
    """How a sequence runs its steps (see the module docstring)."""

    flow_run_id: str | None
    # Whether log()/warn() go somewhere besides tenant_backup's logger (a Prefect run's log):
    # what is said to that logger already (a wait for a lock) is then repeated there, else not.
    own_log: bool

    def __call__(self, step: Step[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one step."""
        ...

    def map(self, step: Step[..., R], items: Sequence[Any], *args: Any) -> list[R]:
        """Run ``step(item, *args)`` for every item at once; wait for all of them, then raise the
        first failure (so that no step is still running when the caller cleans up)."""
        ...

    def each(
        self,
        kind: str,
        items: Sequence[T],
        label: Callable[[T], str],
        body: Callable[[Runner, T], R],
        concurrency: int,
        failure: Callable[[R], str | None] = lambda result: None,
    ) -> list[R]:
        """Run ``body(runner, item)`` for every item, ``concurrency`` at once, each as one unit that a
        person finds by its ``label`` (in Prefect, one task run of kind ``kind`` with the item's
        steps inside it); the results in the items' order. ``body`` reports an item's failure in
        its result (``failure`` says whether a result is one, and why: a Prefect task run then ends
        Failed); should it raise, the first error is raised once every item is done."""
        ...

    def log(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def report(self, publish: Callable[..., None], *args: Any) -> None:
        """Publish a report (a Prefect artifact); where there is no UI, nothing."""
        ...

    def progress(self, tenant_id: str, description: str, expected_rows: int) -> AbstractContextManager[None]:
        """A progress report fed by :mod:`tenant_backup.progress` events while the block runs."""
        ...

    def approve(self, plan: RestorePlan, timeout_seconds: int, poll_seconds: int) -> Approval:
        """Ask a human to approve the plan (a paused flow run with a form); raises when they do not."""
        ...

    def crashed(self, flow_run_ids: list[str], tenant_id: str, reaper: str) -> None:
        """Tell the orchestrator that these flow runs died (their rows were reaped)."""
        ...

    def label(self, name: str, tags: list[str]) -> None:
        """Name the run for a person (``backup-le-wouri-8b42958c``) and tag it (tenant, format…)."""
        ...


def submit_in_context(pool: Executor, fn: Callable[..., R], *args: Any) -> Future[R]:
    """``pool.submit(fn, *args)`` in a copy of the caller's context, as Prefect's task runner does:
    the call sees the caller's context variables (lent sessions, the Prefect run)."""
    context = contextvars.copy_context()
    return pool.submit(context.run, fn, *args)


def arguments(step: Step[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The step's parameters by name, for its run name."""
    try:
        return dict(inspect.signature(step.fn).bind(*args, **kwargs).arguments)
    except TypeError:
        return {}


def summarize(step: Step[..., Any], label: str, result: Any, seconds: float) -> str:
    """One line of the run's log per step: what it did, how long it took."""
    detail = step.summary(result) if step.summary else ""
    return f"{label}: {detail} ({seconds:.2f} s)" if detail else f"{label} ({seconds:.2f} s)"


class LocalRunner:
    """Runs steps in this process, without Prefect (see the module docstring)."""

    flow_run_id: str | None = None
    own_log = False  # its log is tenant_backup's logger

    def __init__(self, max_workers: int = 4) -> None:
        self.max_workers = max_workers

    def __call__(self, step: Step[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        label = step.label(arguments(step, args, kwargs))
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = step.fn(*args, **kwargs)
            except Exception as exc:
                if attempt >= step.retries or (step.retry_if is not None and not step.retry_if(exc)):
                    raise
                attempt += 1
                self.warn(f"{label} failed ({exc}); retry {attempt} of {step.retries} in {step.retry_delay_seconds} s")
                time.sleep(step.retry_delay_seconds)
                continue
            self.log(summarize(step, label, result, time.perf_counter() - started))
            return result

    def map(self, step: Step[..., R], items: Sequence[Any], *args: Any) -> list[R]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(items))) as pool:
            futures = [submit_in_context(pool, self, step, item, *args) for item in items]
        return [f.result() for f in futures]  # the pool has waited for all of them

    def each(
        self,
        kind: str,
        items: Sequence[T],
        label: Callable[[T], str],
        body: Callable[[Runner, T], R],
        concurrency: int,
        failure: Callable[[R], str | None] = lambda result: None,
    ) -> list[R]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
            futures = [submit_in_context(pool, body, self, item) for item in items]
        return [f.result() for f in futures]

    def log(self, message: str) -> None:
        logger.info(message)

    def warn(self, message: str) -> None:
        logger.warning(message)

    def report(self, publish: Callable[..., None], *args: Any) -> None:
        return None

    @contextmanager
    def _nothing(self) -> Iterator[None]:
        yield

    def progress(self, tenant_id: str, description: str, expected_rows: int) -> AbstractContextManager[None]:
        return self._nothing()

    def label(self, name: str, tags: list[str]) -> None:
        return None

    def crashed(self, flow_run_ids: list[str], tenant_id: str, reaper: str) -> None:
        if flow_run_ids:
            self.warn(
                f"the dead runs of tenant {tenant_id} were Prefect flow runs ({', '.join(flow_run_ids)}); without "
                "PREFECT_API_URL they cannot be marked Crashed there"
            )

    def approve(self, plan: RestorePlan, timeout_seconds: int, poll_seconds: int) -> Approval:
        raise ConfigurationError(
            "an approval is asked in the Prefect UI, and there is no Prefect server: set PREFECT_API_URL to a "
            "running server (tenant-backup serve, or make ui), or restore without --require-approval"
        )
