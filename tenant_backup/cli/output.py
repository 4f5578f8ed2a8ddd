"""What the command line prints for a person: tables that fit the terminal, sizes in human units,
counts with their right plural, and a progress bar on stderr."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["count", "progress_bar", "table"]


def count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,200 rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Rows under a header, columns padded; on a terminal, lines cut to its width."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 1 << 16
    lines = []
    for row in cells:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        line = "  ".join(parts).rstrip()
        lines.append(line if len(line) <= width else line[: max(width - 1, 10)] + "…")
    return "\n".join(lines)


class _Bar:
    """A rich progress bar fed by :mod:`tenant_backup.progress` events: "starting" until the
    first rows, never past 100 % (estimates are estimates)."""

    def __init__(self, verb: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.verb = verb
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task(f"{verb}: starting", total=None, done="")
        self.expected = 0
        self.done = 0

    def __call__(self, event: Any) -> None:
        self.expected += event.expected_rows or 0
        self.done += event.rows
        total = max(self.expected, self.done) or None
        label = f"{self.verb} {event.table}" if event.table else f"{self.verb}: starting"
        self.progress.update(
            self.task, total=total, completed=self.done, description=label, done=count(self.done, "row")
        )


class _ToBar(logging.Handler):
    """Log lines (a wait for a slot, a step) printed above the bar instead of through it."""

    def __init__(self, bar: _Bar) -> None:
        super().__init__()
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.console.print(f"tenant-backup: {record.getMessage()}", markup=False, highlight=False)


@contextmanager
def progress_bar(verb: str, enabled: bool) -> Iterator[None]:
    """A bar on stderr while the block runs, when ``enabled`` and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    from tenant_backup import progress

    bar = _Bar(verb)
    logger = logging.getLogger("tenant_backup")
    saved = logger.handlers[:]
    logger.handlers = [_ToBar(bar)]
    progress.subscribe(bar)
    bar.progress.start()
    try:
        yield
    finally:
        bar.progress.stop()
        progress.unsubscribe(bar)
        logger.handlers = saved
