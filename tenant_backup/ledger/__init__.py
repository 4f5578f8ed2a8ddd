"""The ledger: ``backups``, ``backup_schedules`` and ``backup_restore_logs`` in their own schema;
its migrations are the ``v<n>.sql`` files next to this module. May import: the plumbing only.

Lifecycle of a backup row: ``pending`` (created under the tenant lock) -> ``in_progress`` (the
snapshot is taken) -> ``completed`` (artifact in place, checksum recorded: the commit marker) or
``failed`` (with ``error_message``). A restore's ``backup_restore_logs`` row is ``running`` from
just before its apply (written under the tenant lock) until its result (``success`` set inside the
restore's own transaction, so it commits with the rows; ``failed`` otherwise).

A run that died leaves its backup row pending or in_progress, or its restore log running; the
next backup or restore of that tenant, holding the tenant lock, knows no live run owns such a row
and reaps it to failed (:func:`reap_stale`), returning the Prefect flow runs recorded in them so
that the caller can tell Prefect they crashed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from tenant_backup.db import DatabaseOwner
from tenant_backup.errors import LedgerError, ThrottledError
from tenant_backup.ledger.filters import BackupFilter, BackupStatus, uuid_spelling
from tenant_backup.ledger.migrations import LEDGER_VERSION, migrate

__all__ = [
    "LEDGER_VERSION",
    "BackupFilter",
    "BackupRow",
    "LogResult",
    "check_throttle",
    "complete_backup",
    "completed_paths",
    "count_backups",
    "create_backup",
    "delete_row",
    "fail_backup",
    "list_backups",
    "log_action",
    "mark_in_progress",
    "mark_missing",
    "migrate",
    "newest_completed",
    "reap_stale",
    "record_verification",
    "uuid_spelling",
]

LogResult = Literal["running", "success", "failed"]


class BackupRow(BaseModel):
    """One row of the ``backups`` table."""

    id: str
    tenant_id: str
    tenant_column: str
    nom: str
    type: str
    format: str
    status: BackupStatus
    backup_type: str
    storage_path: str | None = None
    file_size: int | None = None
    record_count: int | None = None
    checksum: str | None = None
    error_message: str | None = None
    created_by: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    tables_backed_up: list[str] | None = None
    categories: list[str] = []
    metadata: dict[str, Any] = {}
    schedule_id: str | None = None
    encrypted_to: list[str] | None = None  # the age recipients of an encrypted artifact
    verified_at: datetime | None = None  # the last verification: when, its verdict, why it failed
    verification: Literal["passed", "failed"] | None = None
    verification_error: str | None = None
    parent_id: str | None = None  # an incremental's parent: the backup it holds the changes since

    @property
    def owner(self) -> DatabaseOwner | None:
        """The database that wrote the artifact (recorded at completion); None for rows written
        before it was recorded."""
        recorded = self.metadata.get("database")
        return DatabaseOwner.model_validate(recorded) if recorded else None


def _q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def reap_stale(conn: psycopg.Connection, schema: str, tenant_id: str, *, reaper: str) -> list[str]:
    """Fail the tenant's rows that a run which died left behind: backups pending or in_progress,
    restore logs running. Call while holding the tenant lock (no live run can own such a row).

    ``reaper`` says who reaps ("backup", "restore"). Returns the Prefect flow run ids recorded in
    the reaped rows (``metadata`` / ``details`` ``flow_run_id``), so that they can be marked crashed.
    """
    message = (
        f"the run that wrote this row died before finishing it (process killed or connection lost); reaped by "
        f"the next {reaper} of tenant {tenant_id}"
    )
    with conn.transaction():
        backups = conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'failed', completed_at = now(), error_message = %s, parent_id = NULL "
                "WHERE tenant_id = %s AND status IN ('pending', 'in_progress') RETURNING metadata->>'flow_run_id'"
            ).format(_q(schema, "backups")),
            (message, tenant_id),
        ).fetchall()
        logs = conn.execute(
            sql.SQL(
                "UPDATE {} SET result = 'failed', error_message = %s "
                "WHERE tenant_id = %s AND result = 'running' RETURNING details->>'flow_run_id'"
            ).format(_q(schema, "backup_restore_logs")),
            (message, tenant_id),
        ).fetchall()
    return sorted({row[0] for row in [*backups, *logs] if row[0]})


def check_throttle(conn: psycopg.Connection, schema: str, tenant_id: str, throttle: timedelta) -> None:
    """Raise ThrottledError when the tenant has a completed backup younger than ``throttle``."""
    row = conn.execute(
        sql.SQL(
            "SELECT id, created_at FROM {} WHERE tenant_id = %s AND status = 'completed' "
            "AND created_at > now() - %s ORDER BY created_at DESC LIMIT 1"
        ).format(_q(schema, "backups")),
        (tenant_id, throttle),
    ).fetchone()
    if row is not None:
        next_at = row[1] + throttle
        raise ThrottledError(
            f"tenant {tenant_id} was backed up at {row[1]:%Y-%m-%d %H:%M:%S %Z} (backup {row[0]}); "
            f"at most one backup per {int(throttle.total_seconds() // 60)} minutes: wait until "
            f"{next_at:%H:%M:%S %Z} or force it (--force; force: true through the API)",
            tenant_id=tenant_id,
            backup_id=str(row[0]),
        )


def create_backup(
    conn: psycopg.Connection,
    schema: str,
    *,
    tenant_id: str,
    tenant_column: str,
    name: str,
    backup_type: str,
    type_: str,
    format_: str,
    categories: list[str],
    created_by: str | None,
    throttle: timedelta | None,
    schedule_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    parent_id: str | None = None,
) -> str:
    """Insert a ``pending`` row and return its id; call while holding the tenant lock, after
    :func:`reap_stale`. Applies the throttle unless ``throttle`` is None.
    """
    with conn.transaction():
        if throttle is not None:
            check_throttle(conn, schema, tenant_id, throttle)
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (tenant_id, tenant_column, nom, type, format, categories, created_by, "
                "backup_type, schedule_id, metadata, parent_id, status) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending') RETURNING id"
            ).format(_q(schema, "backups")),
            (
                tenant_id,
                tenant_column,
                name,
                type_,
                format_,
                Jsonb(categories),
                created_by,
                backup_type,
                schedule_id,
                Jsonb(metadata or {}),
                parent_id,
            ),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _transition(
    conn: psycopg.Connection,
    schema: str,
    backup_id: str,
    expected: tuple[str, ...],
    assignments: sql.Composable,
    params: tuple[Any, ...],
) -> None:
    cur = conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = %s AND status = ANY(%s)").format(_q(schema, "backups"), assignments),
        (*params, backup_id, list(expected)),
    )
    if cur.rowcount != 1:
        raise LedgerError(
            f"backup {backup_id} is not {' or '.join(expected)} in the ledger (was it reaped or deleted?)",
            backup_id=backup_id,
        )


def mark_in_progress(conn: psycopg.Connection, schema: str, backup_id: str, metadata: dict[str, Any]) -> None:
    _transition(
        conn,
        schema,
        backup_id,
        ("pending",),
        sql.SQL("status = 'in_progress', started_at = now(), metadata = metadata || %s"),
        (Jsonb(metadata),),
    )


def complete_backup(
    conn: psycopg.Connection,
    schema: str,
    backup_id: str,
    *,
    storage_path: str,
    file_size: int,
    record_count: int,
    checksum: str,
    tables: list[str],
    metadata: dict[str, Any],
    encrypted_to: list[str] | None = None,
) -> None:
    """Record the artifact: from here on the backup exists."""
    _transition(
        conn,
        schema,
        backup_id,
        ("in_progress",),
        sql.SQL(
            "status = 'completed', completed_at = now(), error_message = NULL, storage_path = %s, "
            "file_size = %s, record_count = %s, checksum = %s, tables_backed_up = %s, encrypted_to = %s, "
            "metadata = metadata || %s"
        ),
        (storage_path, file_size, record_count, checksum, tables, encrypted_to, Jsonb(metadata)),
    )


def fail_backup(conn: psycopg.Connection, schema: str, backup_id: str, error: str) -> None:
    _transition(
        conn,
        schema,
        backup_id,
        ("pending", "in_progress"),
        sql.SQL("status = 'failed', completed_at = now(), error_message = %s, parent_id = NULL"),
        (error[:4000],),
    )


def log_action(
    conn: psycopg.Connection,
    schema: str,
    *,
    action: str,
    result: LogResult,
    tenant_id: str | None,
    backup_id: str | None = None,
    performed_by: str | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
    log_id: str | None = None,
) -> None:
    """Write one row of ``backup_restore_logs`` (seed 001's audit of backups and restores).

    With ``log_id``, a run writes one row in steps: first ``running``, then its result, which
    settles it: a row that is no longer running (committed, or reaped) is never changed again, and
    a result without a running row before it inserts the row. Without it, a new row.
    """
    conn.execute(
        sql.SQL(
            "INSERT INTO {} AS l (id, backup_id, tenant_id, performed_by, action, result, error_message, details) "
            "VALUES (coalesce(%s::uuid, gen_random_uuid()), %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
            "SET result = excluded.result, error_message = excluded.error_message, details = l.details || "
            "excluded.details WHERE l.result = 'running'"
        ).format(_q(schema, "backup_restore_logs")),
        (log_id, backup_id, tenant_id, performed_by, action, result, error, Jsonb(details or {})),
    )


def record_verification(conn: psycopg.Connection, schema: str, backup_id: str, error: str | None) -> None:
    """The verdict of a verification of ``backup_id``: passed, or failed and why."""
    conn.execute(
        sql.SQL("UPDATE {} SET verified_at = now(), verification = %s, verification_error = %s WHERE id = %s").format(
            _q(schema, "backups")
        ),
        ("failed" if error else "passed", error, backup_id),
    )


def newest_completed(conn: psycopg.Connection, schema: str) -> list[BackupRow]:
    """Each tenant's newest completed backup, the least recently verified first (never: first)."""
    rows = _select(
        conn,
        schema,
        sql.SQL(
            "id IN (SELECT DISTINCT ON (tenant_id) id FROM {} WHERE status = 'completed' "
            "ORDER BY tenant_id, completed_at DESC)"
        ).format(_q(schema, "backups")),
        (),
        limit=None,
    )
    return sorted(rows, key=lambda r: (r.verified_at is not None, r.verified_at or r.created_at, r.tenant_id))


def get_backup(conn: psycopg.Connection, schema: str, backup_id: str) -> BackupRow:
    rows = _select(conn, schema, sql.SQL("id = %s"), (backup_id,), limit=1)
    if not rows:
        raise LedgerError(f"no backup {backup_id} in the ledger; `tenant-backup list` shows them", backup_id=backup_id)
    return rows[0]


def list_backups(
    conn: psycopg.Connection,
    schema: str,
    *,
    limit: int | None = 50,
    offset: int = 0,
    where: BackupFilter | None = None,
) -> list[BackupRow]:
    """Newest first, filtered; ``limit=None`` for all."""
    condition, params = (where or BackupFilter()).where()
    return _select(conn, schema, condition, params, limit=limit, offset=offset)


def count_backups(conn: psycopg.Connection, schema: str, where: BackupFilter) -> int:
    condition, params = where.where()
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_q(schema, "backups"), condition), params)
    found = row.fetchone()
    return int(found[0]) if found else 0


def completed_paths(conn: psycopg.Connection, schema: str, paths: list[str]) -> set[str]:
    """Those of ``paths`` that a completed backup row records as its artifact, read now."""
    cur = conn.execute(
        sql.SQL("SELECT storage_path FROM {} WHERE status = 'completed' AND storage_path = ANY(%s)").format(
            _q(schema, "backups")
        ),
        (paths,),
    )
    return {row[0] for row in cur}


def delete_row(conn: psycopg.Connection, schema: str, backup_id: str) -> None:
    """Remove a backup's row (its object is already gone); its log rows keep a NULL backup id."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(_q(schema, "backups")), (backup_id,))


def mark_missing(conn: psycopg.Connection, schema: str, backup_id: str) -> None:
    """A completed backup whose object is gone: failed, so that nothing tries to restore it."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = 'failed', error_message = 'artifact missing from storage (found by reconcile)' "
            "WHERE id = %s AND status = 'completed'"
        ).format(_q(schema, "backups")),
        (backup_id,),
    )


def _select(
    conn: psycopg.Connection,
    schema: str,
    where: sql.Composable,
    params: tuple[Any, ...],
    *,
    limit: int | None,
    offset: int = 0,
) -> list[BackupRow]:
    query = sql.SQL(
        "SELECT id::text, tenant_id, tenant_column, nom, type, format, status, backup_type, storage_path, file_size, "
        "record_count, checksum, error_message, created_by::text, created_at, started_at, completed_at, "
        "tables_backed_up, categories, metadata, schedule_id::text, encrypted_to, verified_at, verification, "
        "verification_error, parent_id::text FROM {} WHERE {} "
        "ORDER BY created_at DESC, id LIMIT %s OFFSET %s"
    ).format(_q(schema, "backups"), where)
    with conn.cursor(row_factory=dict_row) as cur:
        return [BackupRow.model_validate(r) for r in cur.execute(query, (*params, limit, offset))]
