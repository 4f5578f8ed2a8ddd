"""A restore's failures in a sentence: what the database refused (the table, the constraint, never
row data), what it ran out of, and who held the lock a restore waited for."""

from __future__ import annotations

import psycopg

from tenant_backup.errors import RestoreFailedError

__all__ = ["database_failure", "lock_holders"]


def lock_holders(conn: psycopg.Connection, tables: list[str]) -> str:
    """The other sessions holding locks on ``tables`` (those in a transaction first), for a message."""
    try:
        rows = conn.execute(
            "SELECT a.pid, a.application_name, a.state, string_agg(DISTINCT l.relation::regclass::text, ', ') "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.pid <> pg_backend_pid() "
            "AND l.relation = ANY(SELECT to_regclass(t) FROM unnest(%s::text[]) t) "
            "GROUP BY 1, 2, 3, a.xact_start ORDER BY a.xact_start NULLS LAST LIMIT 3",
            (tables,),
        ).fetchall()
    except psycopg.Error:
        return "another session"
    if not rows:
        return "a session that holds none of its tables' locks now (a row of a table it only reads?)"
    return "; ".join(
        f"{repr(name) if name else 'a session'} (pid {pid}, {state}) on {relations}"
        for pid, name, state, relations in rows
    )


def database_failure(exc: psycopg.Error, tenant: str, backup_id: str) -> RestoreFailedError:
    """A refusal of the database during a restore, in a sentence: which table, which constraint."""
    diag = exc.diag
    first = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = f"table {diag.table_name}" + (f" (schema {diag.schema_name})" if diag.schema_name else "")
    if isinstance(exc, psycopg.errors.IntegrityError):
        # "Key (id)=(…) is not present…" says which key; "Failing row contains (…)" would print row data.
        detail = f"; {diag.message_detail}" if (diag.message_detail or "").startswith("Key ") else ""
        text = (
            f"the database refused the restore into tenant {tenant}: {where} violates constraint "
            f"{diag.constraint_name} ({first}{detail})"
        )
    elif (exc.sqlstate or "").startswith("53"):  # insufficient resources: disk, memory, temp_file_limit
        text = (
            f"the database server ran out of room during the restore into tenant {tenant} ({first}): more than "
            "the restore's estimate; free space on the server, raise temp_file_limit or TENANT_BACKUP_WORK_MEM, "
            "or restore fewer tables at once (--table)"
        )
    elif isinstance(exc, psycopg.OperationalError):
        text = f"the connection to the database was lost during the restore into tenant {tenant} ({first})"
    else:
        text = (
            f"the database refused the restore into tenant {tenant}"
            + (f" at {where}" if diag.table_name else "")
            + f" ({first})"
        )
    if isinstance(exc, psycopg.errors.UniqueViolation):
        # The restore inserts only keys the tenant lacked when compared: another session wrote one since.
        text += (
            ": a key the restore inserts was written by another session while it ran (or is held by another "
            "tenant's row); stop the app's writes for this tenant and run it again"
        )
    return RestoreFailedError(
        f"{text}; PostgreSQL rolled the whole restore back, nothing changed; fix the cause, then run it again",
        tenant_id=tenant,
        backup_id=backup_id,
        table=diag.table_name,
    )
