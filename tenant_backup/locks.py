"""The backup slots, the per-tenant lock and the shared snapshot.

Slots and the tenant lock are session-level advisory locks: PostgreSQL frees them the moment the
session ends, whoever ran it and wherever (a ``kill -9``, a lost machine), with or without a
Prefect server. Every wait for one is bounded, says once what it waits for (the holders' sessions,
named by their ``application_name``), and fails naming them when the bound passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from tenant_backup.db import POOLER_HINT, connect
from tenant_backup.errors import DatabaseBusyError, SnapshotError, TenantBusyError

__all__ = [
    "SLOT_LOCK",
    "SLOT_WAIT",
    "TENANT_LOCK",
    "Notify",
    "Snapshot",
    "TenantLock",
    "import_snapshot",
    "take_tenant_lock_in_transaction",
    "tenant_lock",
    "tenant_lock_if_free",
]

log = logging.getLogger("tenant_backup")

Notify = Callable[[str], None]
TENANT_LOCK = "tenant-backup"  # key (hashtext(TENANT_LOCK), hashtext(tenant)); the SQL script takes it too
SLOT_LOCK = "tenant-backup-slot"  # keys (hashtext(SLOT_LOCK), 0 .. slots - 1)
SLOT_POLL_SECONDS = 0.5
SLOT_WAIT = "tenant-backup slot-wait"  # the application_name of a session waiting for a slot, then the tenant


def _holders(conn: psycopg.Connection, where: sql.Composable, params: tuple[Any, ...]) -> str:
    """The other sessions holding the locks of ``pg_locks`` that ``where`` selects, for a message."""
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT a.pid, a.application_name, a.backend_start, a.state FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND {} "
            "ORDER BY a.backend_start, a.pid"
        ).format(where),
        params,
    ).fetchall()
    if not rows:
        return "sessions that are gone now"
    return ", ".join(
        (f"'{name}' " if name else "a session ")
        + f"(pid {pid}"
        + (f", connected {start:%Y-%m-%d %H:%M:%S} UTC" if start else "")
        + (f", {state}" if state else "")
        + ")"
        for pid, name, start, state in rows
    )


def _advisory(key: str) -> sql.Composed:
    """pg_locks rows of the two-key advisory locks (hashtext(key), k) for k in a list parameter."""
    return sql.SQL(
        "l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = hashtext({})::oid "
        "AND l.objid = ANY(%s::int4[]::oid[])"
    ).format(sql.Literal(key))


def _slot_holders(conn: psycopg.Connection, slots: int) -> str:
    """Who holds the database's backup slots 0 .. slots - 1, as a message names them."""
    return _holders(conn, _advisory(SLOT_LOCK), (list(range(slots)),))


def _tenant_holders(conn: psycopg.Connection, tenant_id: str) -> str:
    row = conn.execute("SELECT hashtext(%s)", (tenant_id,)).fetchone()
    assert row is not None
    return _holders(conn, _advisory(TENANT_LOCK), ([row[0]],))


def _say(notify: Notify | None, message: str) -> None:
    """A wait, said once: to tenant_backup's logger (the CLI prints it) and to ``notify`` (a Prefect
    run's log; a runner whose log is that logger passes none)."""
    log.warning(message)
    if notify is not None:
        notify(message)


def _take_slot(conn: psycopg.Connection, tenant_id: str, slots: int, timeout: float, notify: Notify | None) -> int:
    """Take one of the database's ``slots`` backup slots on this session, polling up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    name = conn.execute("SELECT current_setting('application_name')").fetchone()
    waiting = False
    while True:
        for slot in range(slots):
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", (SLOT_LOCK, slot)).fetchone()
            if row is not None and row[0]:
                if waiting and name is not None:
                    conn.execute("SELECT set_config('application_name', %s, false)", (name[0],))
                return slot
        if not waiting:
            waiting = True
            conn.execute("SELECT set_config('application_name', left(%s, 63), false)", (f"{SLOT_WAIT} {tenant_id}",))
            _say(
                notify,
                f"backup of tenant {tenant_id} waits for a backup slot: all {slots} slot(s) of database "
                f"{conn.info.dbname} are taken, by {_slot_holders(conn, slots)}; it waits up to {timeout:.0f} s "
                "(TENANT_BACKUP_SLOT_TIMEOUT)",
            )
        if time.monotonic() >= deadline:
            raise DatabaseBusyError(
                f"no backup slot of database {conn.info.dbname} came free within {timeout:.0f} s for tenant "
                f"{tenant_id}: all {slots} are held by {_slot_holders(conn, slots)}; nothing was written: run "
                "the backup again later, or raise TENANT_BACKUP_SLOTS or TENANT_BACKUP_SLOT_TIMEOUT",
                tenant_id=tenant_id,
            )
        time.sleep(SLOT_POLL_SECONDS)


def _take_tenant_lock(
    conn: psycopg.Connection,
    tenant_id: str,
    purpose: str,
    lock_timeout: str,
    notify: Notify | None,
    *,
    transaction: bool = False,
) -> None:
    """Take the tenant's lock on this session (or, ``transaction``, until this transaction ends),
    waiting up to ``lock_timeout``; a wait is said once, naming who holds the lock."""
    key = (TENANT_LOCK, tenant_id)
    scope = "_xact" if transaction else ""
    row = conn.execute(f"SELECT pg_try_advisory{scope}_lock(hashtext(%s), hashtext(%s))", key).fetchone()
    if row is not None and row[0]:
        return
    holders = _tenant_holders(conn, tenant_id)  # named now: a failed wait aborts a transaction
    _say(
        notify,
        f"{purpose} of tenant {tenant_id} waits for the tenant's lock, held by {holders}; it waits up to "
        f"lock_timeout={lock_timeout} (TENANT_BACKUP_LOCK_TIMEOUT)",
    )
    try:
        conn.execute(f"SELECT pg_advisory{scope}_lock(hashtext(%s), hashtext(%s))", key)
    except pg_errors.LockNotAvailable as exc:
        raise TenantBusyError(
            f"another backup or restore of tenant {tenant_id} is running (its lock is held by {holders} and was "
            f"not free within lock_timeout={lock_timeout}); nothing was changed: wait for it to finish, then run "
            "again",
            tenant_id=tenant_id,
        ) from exc


def take_tenant_lock_in_transaction(conn: psycopg.Connection, tenant_id: str, purpose: str, lock_timeout: str) -> None:
    """The tenant's lock until the current transaction ends (a restore, an erasure): see
    :func:`_take_tenant_lock`. Raises TenantBusyError past ``lock_timeout``."""
    _take_tenant_lock(conn, tenant_id, purpose, lock_timeout, None, transaction=True)


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot: its id for ``SET TRANSACTION SNAPSHOT``, and when it was taken."""

    snapshot_id: str
    taken_at: datetime
    server_version: str
    xids: str = ""  # pg_current_snapshot(): which transactions' writes it sees


class TenantLock:
    """A session holding the tenant's advisory lock; it can also export the shared snapshot.

    Backups and restores of one tenant take the same lock, so they never interleave.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        tenant_id: str,
        *,
        lock_timeout: str = "10s",
        slot: int | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self.lock_timeout = lock_timeout
        self.slot = slot  # the backup slot this session holds, if any
        self.notify = notify  # where waits are said, besides tenant_backup's logger

    @contextmanager
    def snapshot(self, tables: list[tuple[str, str]]) -> Iterator[Snapshot]:
        """Open a REPEATABLE READ, READ ONLY transaction, lock ``tables`` (schema, name) in ACCESS SHARE mode
        (no concurrent DROP or ALTER, as pg_dump does), export its snapshot, and keep it open
        until the block ends."""
        conn = self.conn
        try:
            self._begin_locked(tables)
            row = conn.execute(
                "SELECT pg_export_snapshot(), now(), current_setting('server_version'), pg_current_snapshot()::text"
            ).fetchone()
            assert row is not None
            yield Snapshot(snapshot_id=row[0], taken_at=row[1], server_version=row[2], xids=row[3])
        except BaseException:
            with suppress(psycopg.Error):  # the error that got us here is the one to report
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("ROLLBACK")
        except psycopg.OperationalError as exc:
            # The session that held the snapshot and the tenant lock is gone: another backup or a
            # restore may already have started, so nothing read through it is trusted.
            raise SnapshotError(
                f"the session holding tenant {self.tenant_id}'s snapshot and lock was lost ({exc}); "
                "the backup is abandoned: run it again",
                tenant_id=self.tenant_id,
            ) from exc

    def _begin_locked(self, tables: list[tuple[str, str]]) -> None:
        """BEGIN, then ACCESS SHARE on ``tables`` before any query takes the snapshot; a table that
        an ALTER, a DROP or a LOCK TABLE holds is waited for up to lock_timeout, and said."""
        conn = self.conn
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        conn.execute(begin)
        if not tables:
            return
        names = sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(n), sql.Identifier(t)) for n, t in tables)
        try:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT").format(names))
            return
        except pg_errors.LockNotAvailable:
            conn.execute("ROLLBACK")  # no query may run in the transaction before its locks: start again
        pairs = ([n for n, _ in tables], [t for _, t in tables])
        holding = sql.SQL(
            "l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.relation IN (SELECT c.oid FROM "
            "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))"
        )
        _say(
            self.notify,
            f"backup of tenant {self.tenant_id} waits for its tables, locked by "
            f"{_holders(conn, holding, pairs)}; it waits up to lock_timeout={self.lock_timeout} "
            "(TENANT_BACKUP_LOCK_TIMEOUT)",
        )
        conn.execute(begin)
        try:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))
        except pg_errors.LockNotAvailable as exc:
            conn.execute("ROLLBACK")
            raise TenantBusyError(
                f"tables of tenant {self.tenant_id} are locked by another session "
                f"({_holders(conn, holding, pairs)}: an ALTER, a restore?) for longer than "
                f"lock_timeout={self.lock_timeout}; retry later or raise TENANT_BACKUP_LOCK_TIMEOUT",
                tenant_id=self.tenant_id,
            ) from exc


@contextmanager
def tenant_lock(
    url: str,
    tenant_id: str,
    *,
    lock_timeout: str = "10s",
    purpose: str = "backup",
    slots: int = 0,
    slot_timeout: float = 600,
    notify: Notify | None = None,
) -> Iterator[TenantLock]:
    """Hold the tenant's session-level advisory lock for the block (waits up to lock_timeout).

    With ``slots``, the session first takes one of the database's ``slots`` backup slots (waits up
    to ``slot_timeout`` seconds): slot first, so that a backup waiting for a slot never holds up
    the tenant's restores. The session is named ``tenant-backup <purpose> <tenant>``; closing it
    frees both.
    """
    conn = connect(url, lock_timeout=lock_timeout, application_name=f"tenant-backup {purpose} {tenant_id}")
    try:
        slot = _take_slot(conn, tenant_id, slots, slot_timeout, notify) if slots else None
        _take_tenant_lock(conn, tenant_id, purpose, lock_timeout, notify)
        yield TenantLock(conn, tenant_id, lock_timeout=lock_timeout, slot=slot, notify=notify)
    finally:
        conn.close()  # closing the session releases the lock and the slot


@contextmanager
def tenant_lock_if_free(conn: psycopg.Connection, tenant_id: str) -> Iterator[bool]:
    """Take the tenant's lock on ``conn`` if no run holds it, without waiting; yields whether it
    was taken, and releases it when the block ends. Holding it proves that no backup or restore of
    the tenant is running: each holds this lock from start to end."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", (TENANT_LOCK, tenant_id)).fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", (TENANT_LOCK, tenant_id))


def import_snapshot(conn: psycopg.Connection, snapshot_id: str, tenant_id: str) -> None:
    """Start a REPEATABLE READ, READ ONLY transaction that sees exactly ``snapshot_id``."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        # SET TRANSACTION SNAPSHOT takes no bind parameters: the id goes in as a quoted literal.
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
    except (pg_errors.InvalidParameterValue, pg_errors.ObjectNotInPrerequisiteState) as exc:
        conn.execute("ROLLBACK")
        raise SnapshotError(
            f"cannot import snapshot {snapshot_id} for tenant {tenant_id} ({exc}); this happens behind "
            f"a transaction pooler or when the coordinating session ended: {POOLER_HINT}",
            tenant_id=tenant_id,
        ) from exc
