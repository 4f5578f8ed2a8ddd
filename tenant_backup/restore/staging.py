"""The SQL of a restore's plan, one table at a time: staging, then counting what would change.

Each function takes the session that holds the restore's transaction and a :class:`RestoreTable`
(the table's scope now, the backup's columns, its temporary staging table); identifiers only go
through ``psycopg.sql``, the tenant id is always the parameter ``%(tenant)s``.

A table is matched **by key** when it has one that the backup carries (its primary key, else a
unique index of NOT NULL columns, as a replica identity would be): rows are inserted, updated or
deleted by key. A table without one is matched **as a multiset of rows**: each distinct row (its
text form, what COPY prints) is inserted or deleted as many times as the backup and the table
differ by, duplicates included; an unchanged row is never touched.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from tenant_backup.artifact.reader import Artifact
from tenant_backup.errors import RestoreRefusedError
from tenant_backup.progress import Progress, publish
from tenant_backup.tenancy.catalog import Catalog, TableScope
from tenant_backup.tenancy.filters import tenant_filter

__all__ = [
    "ACTIONS",
    "MissingReference",
    "Mode",
    "OutsideEffect",
    "RestoreTable",
    "TableChange",
    "count_changes",
    "count_rows",
    "missing_references",
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
    matched_by: str = "key"  # "key (id)" or "rows" (a table without a key)


class OutsideEffect(BaseModel):
    """Rows of a table outside the restore that reference rows the restore deletes."""

    table: str
    foreign_key: str
    references: str
    rows: int
    action: Literal["cascade", "set null", "set default", "block"]


class MissingReference(BaseModel):
    """Backed-up rows whose foreign key points at rows that the database lacks and the restore
    does not bring (Supabase's ``auth.users``, a table left out of a partial restore)."""

    table: str
    foreign_key: str
    references: str
    rows: int
    examples: list[str]


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
        # Matched by key when the table has one and the backup carries all of it; else as rows.
        self.pk = list(scope.key) if scope.key and all(c in self.common for c in scope.key) else []

    @property
    def keyed(self) -> bool:
        return bool(self.pk)

    @property
    def matched_by(self) -> str:
        return f"key ({', '.join(self.pk)})" if self.keyed else "rows"

    def target(self) -> sql.Composed:
        return self.scope.ident()

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

    def comparable(self, alias: str) -> sql.Composed:
        """The common columns of ``alias`` as a row that has an equality operator."""
        return sql.SQL("ROW({})").format(self.comparable_list(alias))

    def row_text(self, alias: str) -> sql.Composed:
        """The common columns of ``alias`` as one text value: a row of a keyless table, hashable,
        equal exactly when COPY would print the two rows alike."""
        return sql.SQL("ROW({})::text").format(self.cols(self.common, alias))

    def key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c)) for c in self.pk
        )

    def same_row(self, left: str, right: str) -> sql.Composable:
        """``left`` and ``right`` are the same row: by key, or (keyless) by their text."""
        if self.keyed:
            return self.key_match(left, right)
        return sql.SQL("{} = {}").format(self.row_text(left), self.row_text(right))

    def identity(self) -> list[str]:
        """Columns that tell one row of the table from another: the key, else every common column."""
        return self.pk if self.keyed else self.common

    def current(self, columns: list[str]) -> sql.Composed:
        """The tenant's current rows: ``SELECT columns FROM target WHERE <tenant filter>``."""
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            self.cols(columns), self.target(), tenant_filter(self.scope)
        )

    def multiset_surplus(self, rows: sql.Composable, than: sql.Composable, select: list[str]) -> sql.Composed:
        """The rows of ``rows`` beyond as many copies as ``than`` holds of each (multiset
        difference, duplicates included), as ``SELECT <select> FROM …`` (alias ``d``)."""
        return sql.SQL(
            "SELECT {cols} FROM (SELECT r.*, {text} AS tenant_backup_r, row_number() OVER "
            "(PARTITION BY {text}) AS tenant_backup_n FROM ({rows}) r) d "
            "LEFT JOIN (SELECT {b_text} AS r, count(*) AS n FROM ({than}) b GROUP BY 1) b "
            "ON b.r = d.tenant_backup_r WHERE d.tenant_backup_n > coalesce(b.n, 0)"
        ).format(
            cols=self.cols(select, "d") if select else sql.SQL("1"),
            text=self.row_text("r"),
            rows=rows,
            b_text=self.row_text("b"),
            than=than,
        )

    def staged(self) -> sql.Composed:
        return sql.SQL("SELECT * FROM {}").format(sql.Identifier(self.stage))


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
    if not t.keyed:
        current = t.current(t.common)
        surplus = t.multiset_surplus(t.staged(), current, [])
        inserted = count_rows(conn, sql.SQL("SELECT count(*) FROM ({}) x").format(surplus), tenant)
        deleted = 0
        if mode == "replace":
            surplus = t.multiset_surplus(current, t.staged(), [])
            deleted = count_rows(conn, sql.SQL("SELECT count(*) FROM ({}) x").format(surplus), tenant)
        return TableChange(table=t.name, rows=rows, inserted=inserted, updated=0, deleted=deleted, matched_by="rows")
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
            f"{conflicts} row(s) of table {t.name} in the backup have the key ({', '.join(t.pk)}) of a row of "
            "another tenant; nothing was written",
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
    return TableChange(
        table=t.name, rows=rows, inserted=inserted, updated=updated, deleted=deleted, matched_by=t.matched_by
    )


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
        columns = sorted(set(parent.identity()) | set(fk.ref_columns))
        doomed = sql.SQL("SELECT {} FROM ({}) c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
            parent.cols(list(fk.ref_columns), "c"),
            parent.current(columns),
            sql.Identifier(parent.stage),
            parent.same_row("s", "c"),
        )
        child_cols = sql.SQL(", ").join(sql.Identifier(c) for c in fk.columns)
        rows = count_rows(
            conn, sql.SQL("SELECT count(*) FROM {} WHERE ({}) IN ({})").format(fk.child(), child_cols, doomed), tenant
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


def missing_references(
    conn: psycopg.Connection, catalog: Catalog, work: list[RestoreTable], tenant: str
) -> list[MissingReference]:
    """Staged rows whose foreign key to a table outside the restore finds no row there: the
    apply would fail on them, so the plan names them first."""
    names = {t.name: t for t in work}
    found: list[MissingReference] = []
    for fk in catalog.foreign_keys:
        child = names.get(fk.table)
        if child is None or fk.ref_table in names or not all(c in child.common for c in fk.columns):
            continue
        match = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("p", r), sql.Identifier("s", c))
            for c, r in zip(fk.columns, fk.ref_columns, strict=True)
        )
        present = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("s", c)) for c in fk.columns)
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), (array_agg(DISTINCT ROW({cols})::text))[1:3] FROM {stage} s "
                "WHERE {present} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
            ).format(
                cols=child.cols(list(fk.columns), "s"),
                stage=sql.Identifier(child.stage),
                present=present,
                parent=fk.parent(),
                match=match,
            ),
            {"tenant": tenant},
        ).fetchone()
        if row and row[0]:
            found.append(
                MissingReference(
                    table=fk.table, foreign_key=fk.name, references=fk.ref_table, rows=row[0], examples=row[1] or []
                )
            )
    return found
