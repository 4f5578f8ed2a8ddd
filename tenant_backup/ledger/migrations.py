"""The ledger's migrations: the ``v<n>.sql`` files next to this module, applied in order, the
version kept in the schema's comment."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

__all__ = ["LEDGER_VERSION", "migrate"]

LEDGER_VERSION = 7  # v<n>.sql next to this module is version n


def _statement(name: str, schema: str) -> sql.Composed:
    ddl = resources.files("tenant_backup.ledger").joinpath(name).read_text(encoding="utf-8")
    # The file holds '{}' literals: escape every brace, then restore the one placeholder.
    template = ddl.replace("{", "{{").replace("}", "}}").replace("{{schema}}", "{schema}")
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def migrate(conn: psycopg.Connection, schema: str) -> int | None:
    """Create or update the ledger tables (idempotent; concurrent callers wait for each other);
    returns the version found before (None: there was no ledger; LEDGER_VERSION: up to date).

    The version lives in the schema's comment; each step's DDL is idempotent too, so a ledger
    made before versions were recorded is brought up to date."""
    marker = f"tenant-backup ledger v{LEDGER_VERSION}"
    found = conn.execute(
        "SELECT to_regnamespace(%s) IS NOT NULL, obj_description(to_regnamespace(%s), 'pg_namespace')", (schema, schema)
    ).fetchone()
    exists, comment = found if found else (False, None)
    if comment == marker:
        return LEDGER_VERSION
    before = int(comment.rsplit("v", 1)[1]) if comment and comment.startswith("tenant-backup ledger v") else None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenant-backup-migrate'))")
        conn.execute(_statement("v1.sql", schema))
        for version in range(2, LEDGER_VERSION + 1):
            conn.execute(_statement(f"v{version}.sql", schema))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(marker)))
    return before if before is not None else (1 if exists else None)
