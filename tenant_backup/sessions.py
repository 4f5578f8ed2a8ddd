"""Sessions lent to the steps of one run: a connection per worker instead of one per table.

Inside ``with reuse_sessions():`` (a backup; a run of many tenants), :func:`session` lends an
idle session of that database, or opens one, and takes it back when the step is done, unless it
broke or is still inside a transaction; the scope closes every session it opened when it ends.
Outside a scope, :func:`session` opens a session and closes it after, as :func:`db.connect` does.
The scope is a context variable, so the threads of a fan-out see it (Prefect's task runners and
the local runner run each step in a copy of the caller's context). Opening a session costs a
round trip or more (TLS, a remote Supabase: 20-100 ms), a small tenant's table a few ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

import psycopg
from psycopg.pq import TransactionStatus

from tenant_backup.db import connect

__all__ = ["reuse_sessions", "session"]

IDLE_SECONDS = 30.0


class _Lent:
    """The sessions of one scope: idle ones by database and lock timeout, and every one opened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[tuple[float, psycopg.Connection]]] = {}
        self._opened: list[psycopg.Connection] = []

    def take(self, key: tuple[str, str]) -> psycopg.Connection | None:
        """The most recently used idle session; one idle longer than ``IDLE_SECONDS`` is closed
        instead (a server or a proxy may have dropped it meanwhile)."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, conn = idle.pop()
                if time.monotonic() - since <= IDLE_SECONDS:
                    return conn
                self._opened.remove(conn)
            with suppress(psycopg.Error):
                conn.close()

    def opened(self, conn: psycopg.Connection) -> None:
        with self._lock:
            self._opened.append(conn)

    def give_back(self, key: tuple[str, str], conn: psycopg.Connection, *, step_failed: bool) -> None:
        """Keep the session for the next step, or close it: after a failed step, or when it broke
        or is still inside a transaction."""
        healthy = not step_failed and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if healthy:
                self._idle.setdefault(key, []).append((time.monotonic(), conn))
            else:
                self._opened.remove(conn)
        if not healthy:
            with suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        with self._lock:
            opened, self._opened, self._idle = self._opened, [], {}
        for conn in opened:
            with suppress(psycopg.Error):
                conn.close()


_SCOPE: ContextVar[_Lent | None] = ContextVar("tenant_backup_sessions", default=None)


@contextmanager
def reuse_sessions() -> Iterator[None]:
    """Lend sessions to the steps run inside (nested scopes use the outermost one)."""
    if _SCOPE.get() is not None:
        yield
        return
    lent = _Lent()
    token = _SCOPE.set(lent)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        lent.close()


@contextmanager
def session(url: str, *, lock_timeout: str) -> Iterator[psycopg.Connection]:
    """A session of ``url`` (autocommit, pinned settings: see :func:`db.connect`) for one step;
    the step leaves it outside any transaction."""
    lent = _SCOPE.get()
    if lent is None:
        with connect(url, lock_timeout=lock_timeout) as conn:
            yield conn
        return
    key = (url, lock_timeout)
    idle = lent.take(key)
    if idle is None:
        conn = connect(url, lock_timeout=lock_timeout)
        lent.opened(conn)
    else:
        conn = idle
    step_failed = True
    try:
        yield conn
        step_failed = False
    finally:
        lent.give_back(key, conn, step_failed=step_failed)
