"""A step: one plain function and how it runs (its name, retries, its one-line summary).

Steps import no Prefect. A runner (``flows/runner.py``) calls them: the local runner directly,
with the same retries, for the CLI without a Prefect server; the Prefect runner as Prefect tasks,
so that each step is a task run in the UI. One definition serves both.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

from tenant_backup.errors import TenantBackupError

__all__ = ["Step", "step", "transient"]

P = ParamSpec("P")
R = TypeVar("R")


def transient(exc: BaseException) -> bool:
    """Retry only what may succeed later (connection drops, storage hiccups)."""
    return isinstance(exc, TenantBackupError) and exc.transient


@dataclass(frozen=True)
class Step(Generic[P, R]):
    fn: Callable[P, R]
    name: str
    run_name: str | None = None  # e.g. "extract-{scope.table}", from the step's parameters
    retries: int = 0
    retry_delay_seconds: float = 0.0
    retry_if: Callable[[BaseException], bool] | None = None
    summary: Callable[[Any], str] | None = None  # the result in a few words, for the run's log

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def label(self, arguments: dict[str, Any]) -> str:
        """The step's run name for these arguments (``extract-ventes``), else its name."""
        if self.run_name is None:
            return self.name
        try:
            return string.Formatter().vformat(self.run_name, (), arguments)
        except (KeyError, AttributeError, IndexError):
            return self.name


def step(
    name: str,
    *,
    run_name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0.0,
    retry_if: Callable[[BaseException], bool] | None = None,
    summary: Callable[[Any], str] | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]:
    """Declare a function as a step (see the module docstring)."""

    def wrap(fn: Callable[P, R]) -> Step[P, R]:
        return Step(fn, name, run_name, retries, retry_delay_seconds, retry_if, summary)

    return wrap
