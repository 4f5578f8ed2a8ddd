"""Sessions that read in the restore's snapshot, beside the session that holds its transaction.

A restore compares the tenant's rows with the backup (restore/fingerprint.py): reading a big
table's rows is the database's work, and on a database with more than one core several tables
are read at once. The restore's session exports its snapshot (``pg_export_snapshot()``); each
reader opens its own session and imports it (``SET TRANSACTION SNAPSHOT``, REPEATABLE READ,
READ ONLY), so it sees exactly the rows that the restore's session saw at that moment, as
pg_dump's parallel workers do, and takes the planner settings of the restore's transaction
(``work_mem``: a table whose tenant is found through its parent hashes the parent's keys, which
a server's default 4 MB spills to disk; ``random_page_cost``). Readers only read: every write
stays in the restore's one transaction.

Without a way to open sessions (``open_session`` None, or ``workers`` 0), work runs on the
restore's own session, one table after another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType
from typing import TypeVar

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError

__all__ = ["SnapshotReaders"]

T = TypeVar("T")


class SnapshotReaders:
    """``submit(fn, …)`` runs ``fn(session, …)`` on a session that sees the restore's snapshot."""

    def __init__(
        self, conn: psycopg.Connection, open_session: Callable[[], psycopg.Connection] | None, workers: int
    ) -> None:
        self._conn = conn
        self._open = open_session
        self._workers = workers if open_session is not None else 0
        self._pool: ThreadPoolExecutor | None = None
        self._snapshot = ""
        self._settings: list[str] = []  # the restore transaction's work_mem and random_page_cost
        self._local = threading.local()
        self._sessions: list[psycopg.Connection] = []  # every session opened
        self._idle: list[psycopg.Connection] = []  # those no reader thread has taken yet
        self._lock = threading.Lock()

    def __enter__(self) -> SnapshotReaders:
        if self._workers > 0:
            row = self._conn.execute(
                "SELECT pg_export_snapshot(), current_setting('work_mem'), current_setting('random_page_cost')"
            ).fetchone()
            assert row is not None
            self._snapshot, *self._settings = (str(v) for v in row)
            try:  # all sessions now: a database at its connection limit reads on the restore's own
                for _ in range(self._workers):
                    self._idle.append(self._import())
            except (psycopg.Error, ConfigurationError):  # (ConfigurationError: db.connect's "cannot connect")
                self._close()
                return self
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="tenant-backup-reader")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:  # stop what the readers still run: the restore has failed
            for session in self._sessions:
                with suppress(psycopg.Error):
                    session.cancel_safe(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._close()

    def _close(self) -> None:
        sessions, self._sessions, self._idle = self._sessions, [], []
        for session in sessions:
            with suppress(psycopg.Error):
                session.close()

    def _import(self) -> psycopg.Connection:
        """A new session in the exported snapshot."""
        assert self._open is not None
        session = self._open()
        self._sessions.append(session)
        session.autocommit = True
        session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        session.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot)))
        session.execute(
            "SELECT set_config('work_mem', %s, true), set_config('random_page_cost', %s, true)", self._settings
        )
        return session

    @property
    def parallel(self) -> bool:
        """Whether readers have sessions of their own (else :meth:`submit` runs ``fn`` at once)."""
        return self._pool is not None

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        if self._pool is None:
            done: Future[T] = Future()
            done.set_result(fn(self._conn, *args))  # (a failure raises here)
            return done
        return self._pool.submit(self._run, fn, *args)

    def _run(self, fn: Callable[..., T], *args: object) -> T:
        return fn(self._session(), *args)

    def _session(self) -> psycopg.Connection:
        session: psycopg.Connection | None = getattr(self._local, "session", None)
        if session is None:
            with self._lock:
                session = self._idle.pop()
            self._local.session = session
        return session
