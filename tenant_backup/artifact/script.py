"""The SQL artifact: a script for ``psql --single-transaction -f`` that makes the tenant's rows of
the backed-up tables exactly the backup's, and changes nothing else (pure functions).

It does what the restore flow does, with the same statements (:mod:`tenancy.diff`):

1. session settings (UTF-8, UTC, ISO dates, ``row_security = off``), a guard that refuses to run
   outside one transaction, the tenant's advisory lock (the one backups and restores take);
2. one temporary staging table per table, then ``COPY pg_temp."<table>" (…) FROM stdin`` with
   the backed-up rows (the tables' data, in the artifact's table order);
3. **before any change**, refusals: rows of a table outside the backup that reference rows the
   replay would delete (``ON DELETE CASCADE`` would silently remove rows the backup never had,
   ``NO ACTION`` would abort halfway), and backed-up rows that reference rows the database lacks;
4. delete the tenant's rows the backup lacks (children first), insert the missing ones and update
   the changed ones (parents first); unchanged rows are not touched;
5. identity and serial sequences moved forward (never back), then a check: per table, the
   tenant's rows equal the backup's (count, and no backed-up row missing). Any refusal or
   failure raises, and psql's single transaction leaves the database as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from psycopg import sql

from tenant_backup.artifact.manifest import Manifest
from tenant_backup.tenancy.catalog import ForeignKey, TableScope
from tenant_backup.tenancy.diff import (
    RestoreTable,
    dangling,
    delete_surplus,
    doomed_references,
    insert_missing,
    update_changed,
)

__all__ = ["sql_footer", "sql_header"]

_INTEGER = {"smallint", "integer", "bigint"}
# Raises with the message when n > 0; the message is composed at backup time, the count at replay.
_REFUSE = (
    "CREATE OR REPLACE FUNCTION pg_temp.tenant_backup_refuse(n bigint, message text) RETURNS void "
    "LANGUAGE plpgsql AS $$BEGIN IF n > 0 THEN RAISE EXCEPTION USING MESSAGE = 'tenant-backup: ' || "
    "replace(message, '{n}', n::text); END IF; END$$;"
)


def _text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def _quiet(select: str) -> str:
    """A ``SELECT …;`` run for its effect, as a ``DO`` block (``PERFORM``), so that psql prints
    no result set for it. The dollar-quote tag is one the statement does not hold."""
    assert select.startswith("SELECT ") and select.endswith(";")
    tag = "$tb$"
    while tag in select:
        tag = tag[:-1] + "_$"
    return f"DO {tag}BEGIN PERFORM {select.removeprefix('SELECT ')} END{tag};"


def _tables(manifest: Manifest, scopes: list[TableScope]) -> list[RestoreTable]:
    tenant = sql.Literal(manifest.tenant_id)
    return [RestoreTable(s, [c.name for c in s.copied_columns], tenant) for s in scopes]


def _refuse(count: sql.Composable, message: str) -> str:
    return _quiet(
        _text(
            sql.SQL("SELECT pg_temp.tenant_backup_refuse(n, {}) FROM ({}) AS x(n);").format(sql.Literal(message), count)
        )
    )


def sql_header(manifest: Manifest, scopes: list[TableScope]) -> bytes:
    """Comments, session settings, the guard, the lock, and the staging tables (``scopes`` parents first)."""
    tenant = sql.Literal(manifest.tenant_id)
    lines = [
        # Names go in as JSON: a newline in a tenant's name cannot end the comment.
        f"-- tenant-backup SQL artifact of backup {manifest.backup_id}, snapshot of {manifest.date.isoformat()}: "
        + json.dumps({manifest.tenant_column: manifest.tenant_id, "name": manifest.tenant_name}, ensure_ascii=False),
        "-- Makes this tenant's rows of these tables exactly the backup's, in a database with the same schema:",
        '--   psql --single-transaction -f THIS_FILE "postgresql://…"',
        "-- It changes nothing else: it stops, before any change, when rows of other tables reference rows it",
        "-- would delete, or when backed-up rows reference rows the database lacks.",
        "-- manifest: " + manifest.model_dump_json(),
        "\\set ON_ERROR_STOP on",
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "SET TimeZone = 'UTC';",
        "SET DateStyle = 'ISO';",
        "SET IntervalStyle = 'iso_8601';",
        "SET row_security = off;",
        "DO $$BEGIN IF statement_timestamp() = transaction_timestamp() THEN RAISE EXCEPTION "
        "'run this script in one transaction: psql --single-transaction -f FILE'; END IF; END$$;",
        "SET CONSTRAINTS ALL DEFERRED;",
        _quiet(_text(sql.SQL("SELECT pg_advisory_xact_lock(hashtext('tenant-backup'), hashtext({}));").format(tenant))),
        _REFUSE,
    ]
    lines += [_text(t.create_stage()) + ";" for t in _tables(manifest, scopes)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def sql_footer(manifest: Manifest, scopes: list[TableScope], foreign_keys: Iterable[ForeignKey]) -> bytes:
    """Refusals, then the changes, sequences and the final check (``scopes`` parents first;
    ``foreign_keys``: every foreign key from or to a backed-up table, at backup time)."""
    work = _tables(manifest, scopes)
    names = {t.name: t for t in work}
    lines = [f"ANALYZE {_text(t.stage_ident())};" for t in work]
    for fk in foreign_keys:
        if fk.ref_table in names and fk.table not in names:
            lines.append(
                _refuse(
                    doomed_references(fk, names[fk.ref_table]),
                    f"{{n}} row(s) of table {fk.table} reference rows of {fk.ref_table} that this backup does not "
                    f"hold ({fk.name}): the replay would delete or orphan them. Nothing was changed; add table "
                    f"{fk.table} to the backup, or restore with tenant-backup restore (its plan lists them)",
                )
            )
        elif fk.table in names and fk.ref_table not in names:
            count = dangling(fk, names[fk.table].stage_ident(), sql.SQL("count(*)"))
            lines.append(
                _refuse(
                    count,
                    f"{{n}} backed-up row(s) of table {fk.table} reference rows of {fk.ref_table} that this database "
                    f"lacks ({fk.name}). Nothing was changed; create those rows first",
                )
            )
    lines += [
        _refuse(
            t.count_foreign_keys(),
            f"{{n}} backed-up row(s) of table {t.name} have the key ({', '.join(t.pk)}) of another tenant's row. "
            "Nothing was changed",
        )
        for t in work
        if t.keyed
    ]
    lines += [_text(delete_surplus(t)) + ";" for t in reversed(work)]
    lines += [_text(insert_missing(t)) + ";" for t in work]
    lines += [_text(update) + ";" for t in work if (update := update_changed(t)) is not None]
    lines += _sequences(scopes)
    for t in work:
        expected = manifest.tables[t.name].rows
        differs = sql.SQL("SELECT ({}) + abs(({}) - {})").format(t.count_missing(), t.count_current(), expected)
        lines.append(
            _refuse(
                differs,
                f"after the replay, table {t.name} differs from the backup (which has {expected} row(s)): a "
                "trigger rewrote rows, or another session wrote them meanwhile. Nothing was changed",
            )
        )
    lines.append(f"-- end of backup {manifest.backup_id}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _sequences(scopes: list[TableScope]) -> list[str]:
    """Move identity and serial sequences past the restored ids, never backwards."""
    lines = []
    for scope in scopes:
        target = scope.ident()
        for column in scope.copied_columns:
            if column.type not in _INTEGER:
                continue
            statement = sql.SQL(
                "SELECT setval(s.seq::regclass, x.m) FROM (SELECT pg_get_serial_sequence({t}, {c}) AS seq) s "
                "CROSS JOIN LATERAL (SELECT max({col}) AS m FROM {target} WHERE s.seq IS NOT NULL) x "
                "WHERE x.m > coalesce(pg_sequence_last_value(s.seq::regclass), 0);"
            ).format(
                t=sql.Literal(_text(target)), c=sql.Literal(column.name), col=sql.Identifier(column.name), target=target
            )
            lines.append(_quiet(_text(statement)))
    return lines
