"""Finding things in the ledger the way a person types them: a backup by a prefix of its id (as
git and docker accept), and a clear word when this database has no ledger yet."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError, LedgerError
from tenant_backup.naming import backup_reference

__all__ = ["require_ledger", "resolve_backup_id"]


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def require_ledger(conn: psycopg.Connection, schema: str) -> None:
    """Refuse, without creating anything, when the database has no ledger schema yet."""
    row = conn.execute("SELECT to_regclass(format('%%I.backups', %s::text)) IS NOT NULL", (schema,)).fetchone()
    if not row or not row[0]:
        db = conn.info.dbname
        raise LedgerError(
            f"database {db} has no tenant-backup ledger yet (schema {schema}): nothing was backed up here; run "
            "`tenant-backup migrate` to create it (a first backup creates it too)"
        )


def resolve_backup_id(conn: psycopg.Connection, schema: str, text: str) -> str:
    """The full id of the backup that ``text`` names: a UUID, or a unique prefix of one."""
    text = backup_reference(text)
    if _is_uuid(text):
        return text
    require_ledger(conn, schema)
    rows = conn.execute(
        sql.SQL("SELECT id::text FROM {}.backups WHERE id::text LIKE %s ORDER BY created_at DESC LIMIT 6").format(
            sql.Identifier(schema)
        ),
        (text + "%",),
    ).fetchall()
    if not rows:
        raise LedgerError(f"no backup id starts with {text!r}; `tenant-backup list` shows the backups")
    if len(rows) > 1:
        shown = ", ".join(r[0] for r in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise ConfigurationError(f"{text!r} names more than one backup ({shown}); give more characters of the id")
    return str(rows[0][0])
