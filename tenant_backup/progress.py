"""Progress of long steps, published in-process to whoever listens (the CLI's bar, artifacts).

Extraction tasks run in threads of the flow's process, so a plain thread-safe list of listeners
is enough; a listener must be quick and must not raise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Progress", "listening", "publish", "subscribe", "unsubscribe"]


@dataclass(frozen=True)
class Progress:
    """``rows`` more rows (and ``bytes`` more bytes) of ``table`` of ``tenant_id`` are done."""

    tenant_id: str
    table: str
    rows: int
    bytes: int
    done: bool = False
    expected_rows: int = 0  # on the first event of a run: the planner's estimate of all rows


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def listening() -> bool:
    """Whether anyone listens (so that producers can skip the work of measuring)."""
    return bool(_listeners)


def publish(event: Progress) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event)
