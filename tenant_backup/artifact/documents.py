"""The text around the tables of a JSON or SQL artifact: header and footer (pure functions).

JSON (seed 000's document; our manifest rides along under ``manifest``)::

    {"version": …, "date": …, "etablissement_id": …, "etablissement_nom": …, "type": …,
     "categories_selectionnees": […], "format": "tenant-backup", "manifest": {…}, "data": {
    "ventes": [
    {…one row…},
    {…}
    ],
    "clients": [
    ]
    }, "metadata": {"total_records": …, "tables_count": …, "size_bytes": …},
    "checksum": "sha256:…"}

The header is one line, every row one line, so a reader streams it line by line. ``checksum``
is the sha256 of the lines ``<table>:<sha256 of its rows>\\n`` in document order (each table's
rows are hashed while they are extracted, in parallel; the whole file's sha256 is in the ledger).

SQL: a script for ``psql --single-transaction -f`` against a database with the same schema; it
refuses to run outside one transaction, takes the tenant's advisory lock (the one backups and
restores take), deletes the tenant's rows children first, COPYs the rows parents first and moves
sequences forward (never back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from psycopg import sql

from tenant_backup.artifact.manifest import Manifest
from tenant_backup.tenancy.catalog import TableScope
from tenant_backup.tenancy.filters import tenant_filter

__all__ = ["document_checksum", "json_footer", "json_header", "sql_footer", "sql_header"]

_INTEGER = {"smallint", "integer", "bigint"}


def document_checksum(manifest: Manifest, order: Iterable[str]) -> str:
    lines = "".join(f"{name}:{manifest.tables[name].sha256}\n" for name in order)
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def json_header(manifest: Manifest, name_key: str) -> bytes:
    head = {
        "version": manifest.version,
        "date": manifest.date.isoformat().replace("+00:00", "Z"),
        manifest.tenant_column: manifest.tenant_id,
        name_key: manifest.tenant_name,
        "type": manifest.type,
        "categories_selectionnees": manifest.categories,
        "format": manifest.format,
        "manifest": manifest.model_dump(mode="json"),
    }
    text = json.dumps(head, ensure_ascii=False)
    return (text[:-1] + ', "data": {\n').encode("utf-8")


def json_footer(manifest: Manifest, order: list[str]) -> bytes:
    metadata = {
        "total_records": manifest.total_records,
        "tables_count": manifest.tables_count,
        "size_bytes": manifest.size_bytes,
    }
    tail = {"metadata": metadata, "checksum": document_checksum(manifest, order)}
    return ("}, " + json.dumps(tail)[1:] + "\n").encode("utf-8")


def _text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def sql_header(manifest: Manifest, scopes: list[TableScope]) -> bytes:
    """Comments, session settings, the guard, the lock, and the deletes (``scopes`` parents first)."""
    tenant = sql.Literal(manifest.tenant_id)
    lines = [
        # Names go in as JSON: a newline in a tenant's name cannot end the comment.
        f"-- tenant-backup SQL artifact of backup {manifest.backup_id}, snapshot of {manifest.date.isoformat()}: "
        + json.dumps({manifest.tenant_column: manifest.tenant_id, "name": manifest.tenant_name}, ensure_ascii=False),
        "-- Restore into a database with the same schema (it replaces this tenant's rows of these tables):",
        '--   psql --single-transaction -f THIS_FILE "postgresql://…"',
        "-- Rows of other tables that reference deleted rows follow their ON DELETE rules.",
        "-- manifest: " + manifest.model_dump_json(),
        "\\set ON_ERROR_STOP on",
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "SET TimeZone = 'UTC';",
        "SET DateStyle = 'ISO';",
        "SET IntervalStyle = 'iso_8601';",
        "DO $$BEGIN IF statement_timestamp() = transaction_timestamp() THEN RAISE EXCEPTION "
        "'run this script in one transaction: psql --single-transaction -f FILE'; END IF; END$$;",
        "SET CONSTRAINTS ALL DEFERRED;",
        _text(sql.SQL("SELECT pg_advisory_xact_lock(hashtext('tenant-backup'), hashtext({}));").format(tenant)),
    ]
    for scope in reversed(scopes):
        lines.append(_text(sql.SQL("DELETE FROM {} WHERE {};").format(scope.ident(), tenant_filter(scope, tenant))))
    return ("\n".join(lines) + "\n").encode("utf-8")


def sql_footer(manifest: Manifest, scopes: list[TableScope]) -> bytes:
    """Move identity and serial sequences past the restored ids, never backwards."""
    lines = []
    for scope in scopes:
        target = scope.ident()
        for column in scope.copied_columns:
            if column.type not in _INTEGER:
                continue
            lines.append(
                _text(
                    sql.SQL(
                        "SELECT setval(s.seq::regclass, x.m) FROM (SELECT pg_get_serial_sequence({t}, {c}) AS seq) s "
                        "CROSS JOIN LATERAL (SELECT max({col}) AS m FROM {target} WHERE s.seq IS NOT NULL) x "
                        "WHERE x.m > coalesce(pg_sequence_last_value(s.seq::regclass), 0);"
                    ).format(
                        t=sql.Literal(_text(target)),
                        c=sql.Literal(column.name),
                        col=sql.Identifier(column.name),
                        target=target,
                    )
                )
            )
    lines.append(f"-- end of backup {manifest.backup_id}")
    return ("\n".join(lines) + "\n").encode("utf-8")
