"""The SQL of a restore, one table at a time: staging, counting, applying, checking.

Each function takes the session that holds the restore's transaction and a :class:`RestoreTable`
(the table's scope now, the backup's columns, its temporary staging table); identifiers only go
through ``psycopg.sql``, the tenant id is always the parameter ``%(tenant)s``.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from tenant_backup.artifact.manifest import TableManifest
from tenant_backup.artifact.reader import Artifact
from tenant_backup.errors import RestoreCheckError, RestoreRefusedError
from tenant_backup.progress import Progress, publish
from tenant_backup.tenancy.catalog import Catalog, TableScope
from tenant_backup.tenancy.filters import qualified, tenant_filter
from tenant_backup.tenancy.fk_order import RestoreOrder

__all__ = [
    "ACTIONS",
    "OutsideEffect",
    "RestoreTable",
    "TableChange",
    "apply_changes",
    "check_restored",
    "count_changes",
    "count_rows",
    "move_sequences",
    "outside_effects",
    "stage",
]

Mode = Literal["replace", "merge"]
_CHUNK = 1 << 20
# Types without an equality operator: compared through their text form.
_NO_EQUALITY = ("json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle")


class TableChange(BaseModel):
    table: str
    rows: int  # in the backup
    inserted: int
    updated: int
    deleted: int


class OutsideEffect(BaseModel):
    """Rows of a table outside the restore that reference rows the restore deletes."""

    table: str
    foreign_key: str
    references: str
    rows: int
    action: Literal["cascade", "set null", "set default", "block"]


class RestoreTable:
    """One table being restored: its scope now, the backup's columns, its staging table."""

    def __init__(self, scope: TableScope, backup_columns: list[str], stage: str) -> None:
        self.scope = scope
        self.name = scope.table
        current = {c.name: c for c in scope.columns}
        self.backup_columns = backup_columns
        self.dropped = [c for c in backup_columns if c not in current or current[c].generated]
        self.common = [c for c in backup_columns if c not in self.dropped]
        self.added = [c.name for c in scope.columns if not c.generated and c.name not in backup_columns]
        self.types = {c.name: c.type for c in scope.columns}
        self.stage = stage
        self.pk = list(scope.primary_key)

    def target(self) -> sql.Composed:
        return qualified(self.scope.schema_name, self.name)

    def cols(self, names: list[str], alias: str | None = None) -> sql.Composable:
        if alias is None:
            return sql.SQL(", ").join(sql.Identifier(c) for c in names)
        return sql.SQL(", ").join(sql.Identifier(alias, c) for c in names)

    def comparable_list(self, alias: str) -> sql.Composable:
        """The common columns of ``alias``, those of types without equality cast to text."""
        return sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(alias, c))
            if self.types[c].split("(")[0].split("[")[0] in _NO_EQUALITY
            else sql.Identifier(alias, c)
            for c in self.common
        )

    def comparable(self, alias: str) -> sql.Composable:
        """The common columns of ``alias`` as a row that has an equality operator."""
        return sql.SQL("ROW({})").format(self.comparable_list(alias))

    def key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c)) for c in self.pk
        )

    def current(self, columns: list[str]) -> sql.Composable:
        """The tenant's current rows: ``SELECT columns FROM target WHERE <tenant filter>``."""
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            self.cols(columns), self.target(), tenant_filter(self.scope)
        )


def count_rows(conn: psycopg.Connection, query: sql.Composed, tenant: str) -> int:
    row = conn.execute(query, {"tenant": tenant}).fetchone()
    return int(row[0]) if row else 0


def stage(conn: psycopg.Connection, artifact: Artifact, t: RestoreTable, tenant: str, *, rewrite: bool) -> None:
    """COPY the table's rows into a temporary table typed like the target (dropped columns as text);
    with ``rewrite``, the tenant column is set to ``tenant`` (a restore into another tenant)."""
    select = sql.SQL(", ").join(
        sql.SQL("NULL::text AS {}").format(sql.Identifier(c)) if c in t.dropped else sql.Identifier(c)
        for c in t.backup_columns
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(t.stage), select, t.target()
        )
    )
    options = sql.SQL("FORMAT csv, HEADER true" if artifact.copy_format == "csv" else "FORMAT text")
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(sql.Identifier(t.stage), t.cols(t.backup_columns), options)
    with artifact.open_table(t.name) as source, conn.cursor() as cur, cur.copy(copy_in) as copy:
        while data := source.read(_CHUNK):
            copy.write(data)
    column = t.scope.tenant_column
    if rewrite and not t.scope.path and column in t.common:
        conn.execute(
            sql.SQL("UPDATE {} SET {} = %s").format(sql.Identifier(t.stage), sql.Identifier(column)), (tenant,)
        )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(t.stage)))
    publish(Progress(tenant_id=tenant, table=t.name, rows=artifact.manifest.tables[t.name].rows, bytes=0, done=True))


def count_changes(conn: psycopg.Connection, t: RestoreTable, tenant: str, mode: Mode, rows: int) -> TableChange:
    """Refuse keys that belong to another tenant; count inserts, updates and deletes."""
    stage = sql.Identifier(t.stage)
    conflicts = count_rows(
        conn,
        sql.SQL(
            "SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {target} x WHERE {match_x}) "
            "AND NOT EXISTS (SELECT 1 FROM ({current}) c WHERE {match_c})"
        ).format(
            stage=stage,
            target=t.target(),
            match_x=t.key_match("x", "s"),
            current=t.current(t.pk),
            match_c=t.key_match("c", "s"),
        ),
        tenant,
    )
    if conflicts:
        raise RestoreRefusedError(
            f"{conflicts} row(s) of table {t.name} in the backup have the key of a row of another tenant; "
            "nothing was written",
            table=t.name,
            tenant_id=tenant,
        )
    inserted = count_rows(
        conn,
        sql.SQL("SELECT count(*) FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})").format(
            stage, t.target(), t.key_match("x", "s")
        ),
        tenant,
    )
    updated = count_rows(
        conn,
        sql.SQL("SELECT count(*) FROM {} s JOIN ({}) c ON {} WHERE {} IS DISTINCT FROM {}").format(
            stage, t.current(t.common), t.key_match("c", "s"), t.comparable("c"), t.comparable("s")
        ),
        tenant,
    )
    deleted = 0
    if mode == "replace":
        deleted = count_rows(
            conn,
            sql.SQL("SELECT count(*) FROM ({}) c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
                t.current(t.pk), stage, t.key_match("s", "c")
            ),
            tenant,
        )
    return TableChange(table=t.name, rows=rows, inserted=inserted, updated=updated, deleted=deleted)


ACTIONS: dict[str, Literal["cascade", "set null", "set default", "block"]] = {
    "c": "cascade",
    "n": "set null",
    "d": "set default",
    "a": "block",
    "r": "block",
}


def outside_effects(
    conn: psycopg.Connection, catalog: Catalog, work: list[RestoreTable], tenant: str
) -> list[OutsideEffect]:
    """Rows of tables outside the restore that reference rows a replace would delete."""
    names = {t.name: t for t in work}
    effects: list[OutsideEffect] = []
    for fk in catalog.foreign_keys:
        parent = names.get(fk.ref_table)
        if parent is None or fk.table in names:
            continue
        doomed = sql.SQL("SELECT {} FROM ({}) c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
            parent.cols(list(fk.ref_columns), "c"),
            parent.current(sorted(set(parent.pk) | set(fk.ref_columns))),
            sql.Identifier(parent.stage),
            parent.key_match("s", "c"),
        )
        child_cols = sql.SQL(", ").join(sql.Identifier(c) for c in fk.columns)
        rows = count_rows(
            conn,
            sql.SQL("SELECT count(*) FROM {} WHERE ({}) IN ({})").format(
                qualified(catalog.schema, fk.table), child_cols, doomed
            ),
            tenant,
        )
        if rows:
            effects.append(
                OutsideEffect(
                    table=fk.table,
                    foreign_key=fk.name,
                    references=fk.ref_table,
                    rows=rows,
                    action=ACTIONS[fk.on_delete],
                )
            )
    return effects


def apply_changes(
    conn: psycopg.Connection, work: list[RestoreTable], order: RestoreOrder, tenant: str, mode: Mode, *, broken: bool
) -> dict[str, TableChange]:
    """Insert (parents first), set broken keys, update, then delete (children first).

    Returns what each statement did. Rows of a table with a broken foreign key go in with that
    key NULL; their keys are remembered in a temporary table and set once every table's rows are
    in, so the update that follows only counts rows that really changed.
    """
    nulled: dict[str, set[str]] = {t.name: set() for t in work}
    if broken:
        for fk in order.broken:
            nulled[fk.table].update(fk.columns)
    inserted: dict[str, int] = {}
    for t in work:
        values = sql.SQL(", ").join(
            sql.SQL("NULL") if c in nulled[t.name] else sql.Identifier("s", c) for c in t.common
        )
        insert = sql.SQL(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} s "
            "WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})"
        ).format(t.target(), t.cols(t.common), values, sql.Identifier(t.stage), t.target(), t.key_match("x", "s"))
        if nulled[t.name]:
            new = sql.Identifier(f"{t.stage}_new")
            conn.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                    new, t.cols(t.pk), sql.Identifier(t.stage)
                )
            )
            insert = sql.SQL("WITH ins AS ({} RETURNING {}) INSERT INTO {} SELECT * FROM ins").format(
                insert, t.cols(t.pk), new
            )
        inserted[t.name] = conn.execute(insert).rowcount
    for t in work:
        if nulled[t.name]:
            cols = sorted(nulled[t.name])
            conn.execute(
                sql.SQL("UPDATE {} x SET ({}) = ROW({}) FROM {} s, {} n WHERE {} AND {}").format(
                    t.target(),
                    t.cols(cols),
                    t.cols(cols, "s"),
                    sql.Identifier(t.stage),
                    sql.Identifier(f"{t.stage}_new"),
                    t.key_match("x", "s"),
                    t.key_match("n", "s"),
                )
            )
    updated: dict[str, int] = {}
    for t in work:
        non_key = [c for c in t.common if c not in t.pk]
        if not non_key:
            updated[t.name] = 0  # nothing but the key: nothing to update
            continue
        updated[t.name] = conn.execute(
            sql.SQL(
                "UPDATE {target} x SET ({cols}) = ROW({vals}) FROM {stage} s WHERE {match} "
                "AND ({pk}) IN ({current}) AND {cmp_x} IS DISTINCT FROM {cmp_s}"
            ).format(
                target=t.target(),
                cols=t.cols(non_key),
                vals=t.cols(non_key, "s"),
                stage=sql.Identifier(t.stage),
                match=t.key_match("x", "s"),
                pk=t.cols(t.pk, "x"),
                current=t.current(t.pk),
                cmp_x=t.comparable("x"),
                cmp_s=t.comparable("s"),
            ),
            {"tenant": tenant},
        ).rowcount
    deleted: dict[str, int] = {t.name: 0 for t in work}
    if mode == "replace":
        for t in reversed(work):
            deleted[t.name] = conn.execute(
                sql.SQL("DELETE FROM {} x WHERE ({}) IN ({}) AND NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
                    t.target(), t.cols(t.pk, "x"), t.current(t.pk), sql.Identifier(t.stage), t.key_match("s", "x")
                ),
                {"tenant": tenant},
            ).rowcount
    return {
        t.name: TableChange(
            table=t.name, rows=0, inserted=inserted[t.name], updated=updated[t.name], deleted=deleted[t.name]
        )
        for t in work
    }


def move_sequences(conn: psycopg.Connection, work: list[RestoreTable]) -> None:
    """Move identity and serial sequences past the restored ids (never backwards)."""
    for t in work:
        for column in t.common:
            row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (t.target().as_string(conn), column)).fetchone()
            if not row or row[0] is None:
                continue
            conn.execute(
                sql.SQL(
                    "SELECT setval(%(seq)s::regclass, m) FROM (SELECT max({col}) AS m FROM {target}) x "
                    "WHERE m IS NOT NULL AND m > coalesce(pg_sequence_last_value(%(seq)s::regclass), 0)"
                ).format(col=sql.Identifier(column), target=t.target()),
                {"seq": row[0]},
            )


def check_restored(
    conn: psycopg.Connection,
    catalog: Catalog,
    work: list[RestoreTable],
    tenant: str,
    mode: Mode,
    manifest_tables: dict[str, TableManifest],
    *,
    fk_check: bool,
) -> None:
    """Before commit: the tenant's rows equal the backup's (replace) or contain them (merge);
    in replica mode, no foreign key of a restored row points at a missing row.

    Equal multisets: as many rows as the manifest says, and no staged row missing from the
    tenant's rows (``EXCEPT ALL``); the staged rows are the artifact's, whose sha256 was checked.
    """
    for t in work:
        current = sql.SQL("SELECT {} FROM ({}) c").format(t.comparable_list("c"), t.current(t.common))
        staged = sql.SQL("SELECT {} FROM {} c").format(t.comparable_list("c"), sql.Identifier(t.stage))
        missing = count_rows(conn, sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) d").format(staged, current), tenant)
        have = count_rows(conn, sql.SQL("SELECT count(*) FROM ({}) c").format(t.current(t.pk)), tenant)
        expected = manifest_tables[t.name].rows
        if missing or (mode == "replace" and have != expected) or have < expected:
            raise RestoreCheckError(
                f"after restore, table {t.name} of tenant {tenant} differs from the backup ({missing} row(s) "
                f"missing or altered, {have} rows where the backup has {expected}; a trigger that rewrites rows, "
                "or a key held by another tenant's row, does this: a dry run shows the latter); rolled back, "
                "nothing changed",
                table=t.name,
                tenant_id=tenant,
            )
    if fk_check:
        names = {t.name: t for t in work}
        for fk in catalog.foreign_keys:
            child = names.get(fk.table)
            if child is None:
                continue
            present = sql.SQL(" AND ").join(
                sql.SQL("{} IS NOT NULL").format(sql.Identifier("c", c)) for c in fk.columns
            )
            match = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier("p", r), sql.Identifier("c", c))
                for c, r in zip(fk.columns, fk.ref_columns, strict=True)
            )
            orphans = count_rows(
                conn,
                sql.SQL("SELECT count(*) FROM ({}) c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
                    child.current(sorted(set(fk.columns))), present, qualified(catalog.schema, fk.ref_table), match
                ),
                tenant,
            )
            if orphans:
                raise RestoreCheckError(
                    f"after restore, {orphans} row(s) of {fk.table} reference missing rows of {fk.ref_table} "
                    f"({fk.name}); rolled back, nothing changed",
                    table=fk.table,
                    tenant_id=tenant,
                )
