"""A restore's plan, one table at a time: staging the backup's rows, then counting what would
change, what the deletes would reach outside the restore, and which references would break.

Each function takes the session that holds the restore's transaction and a
:class:`~tenant_backup.tenancy.diff.RestoreTable` (the table's scope now, the backup's columns,
its staging table; by key or as a multiset of rows, see :mod:`tenancy.diff`); the tenant id is
always the parameter ``%(tenant)s``.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from tenant_backup.artifact.manifest import TableManifest
from tenant_backup.artifact.reader import Artifact
from tenant_backup.errors import RestoreRefusedError
from tenant_backup.progress import Progress, publish
from tenant_backup.restore.chain import copy_rows, stage_chain
from tenant_backup.tenancy.catalog import Catalog, ForeignKey
from tenant_backup.tenancy.diff import RestoreTable, dangling, doomed_keys, referencing
from tenant_backup.tenancy.fk_order import RestoreOrder
from tenant_backup.tenancy.profiles import Profile
from tenant_backup.tenancy.scope import find_tenant_table, plan_scope

__all__ = [
    "ACTIONS",
    "MissingReference",
    "Mode",
    "OutsideEffect",
    "TableChange",
    "count_changes",
    "count_rows",
    "missing_references",
    "outside_effects",
    "prepare_tables",
    "refuse_rows_without_values",
    "refuse_taken_keys",
    "refuse_unkeyed_cycles",
    "stage",
    "table_changes",
]

Mode = Literal["replace", "merge"]


class TableChange(BaseModel):
    table: str
    rows: int  # in the backup
    inserted: int
    updated: int
    deleted: int
    matched_by: str = "key"  # "key (id)" or "rows" (a table without a key)
    staged: int | None = None  # rows of the backup staged and compared in SQL: all, or those whose line differed


class OutsideEffect(BaseModel):
    """Rows of a table outside the restore that reference rows the restore deletes."""

    table: str
    foreign_key: str
    references: str
    rows: int
    action: Literal["cascade", "set null", "set default", "block"]
    via: str = ""  # the chain of tables, from the restored one: "projects -> billing.invoices"


class MissingReference(BaseModel):
    """Backed-up rows whose foreign key points at rows that the database lacks and the restore
    does not bring (Supabase's ``auth.users``, a table left out of a partial restore)."""

    table: str
    foreign_key: str
    references: str
    rows: int
    examples: list[str]


def table_changes(
    work: list[RestoreTable], inserted: dict[str, int], updated: dict[str, int], deleted: dict[str, int]
) -> dict[str, TableChange]:
    """What an apply's statements did to each table (``rows`` is the caller's to fill)."""
    return {
        t.name: TableChange(
            table=t.name,
            rows=0,
            inserted=inserted[t.name],
            updated=updated[t.name],
            deleted=deleted[t.name],
            matched_by=t.matched_by,
        )
        for t in work
    }


def count_rows(conn: psycopg.Connection, query: sql.Composed, tenant: str) -> int:
    row = conn.execute(query, {"tenant": tenant}).fetchone()
    return int(row[0]) if row else 0


def stage(conn: psycopg.Connection, artifact: Artifact, t: RestoreTable, tenant: str, *, rewrite: bool) -> None:
    """COPY the table's rows into its staging table; with ``rewrite``, the tenant column is set to
    ``tenant`` (a restore into another tenant)."""
    conn.execute(t.create_stage())
    if artifact.chain:
        stage_chain(conn, artifact, t)
    else:
        copy_rows(conn, artifact, t, t.stage_ident())
    column = t.scope.tenant_column
    if rewrite and not t.scope.path and column in t.common:
        conn.execute(sql.SQL("UPDATE {} SET {} = %s").format(t.stage_ident(), sql.Identifier(column)), (tenant,))
    conn.execute(sql.SQL("ANALYZE {}").format(t.stage_ident()))
    t.staged_rows = artifact.state.tables[t.name].rows
    publish(Progress(tenant_id=tenant, table=t.name, rows=t.staged_rows, bytes=0, done=True))


def count_changes(conn: psycopg.Connection, t: RestoreTable, tenant: str, mode: Mode, rows: int) -> TableChange:
    """A plan's counts for a table without a key, matched as a multiset of rows (a keyed table
    is counted from its delta: restore/delta.py)."""
    current = t.current(t.common)
    inserted = count_rows(conn, t.count_inserts(), tenant)
    deleted = 0
    if mode == "replace":
        surplus = t.multiset_surplus(current, t.staged(), [])
        deleted = count_rows(conn, sql.SQL("SELECT count(*) FROM ({}) x").format(surplus), tenant)
    return TableChange(table=t.name, rows=rows, inserted=inserted, updated=0, deleted=deleted, matched_by="rows")


# Whose row holds a backed-up key, when it is not the tenant's: another tenant's, or a row that
# no tenant reaches (its path runs through a NULL foreign key, or a parent key changed since the
# backup: the restore writes the old key back without firing ON UPDATE CASCADE).
TAKEN = (
    "of a row of another tenant or of none (a NULL foreign key on its path, or a parent whose key "
    "changed since the backup: set that key back, and ON UPDATE CASCADE takes its rows along)"
)


def refuse_taken_keys(taken: list[tuple[RestoreTable, int]], tenant: str) -> None:
    """A plan refuses backed-up rows whose key another tenant's row holds, naming every table."""
    taken = [(t, n) for t, n in taken if n]
    if taken:
        raise RestoreRefusedError(
            "; ".join(f"{n} row(s) of table {t.name}" for t, n in taken)
            + f" in the backup have the key ({', '.join(taken[0][0].pk)}"
            + (", …" if len(taken) > 1 else "")
            + f") {TAKEN}; nothing was written (restoring into another tenant works only where "
            "keys are unique per tenant: with ids unique over the whole table, restore into the tenant the backup "
            "is of)",
            table=taken[0][0].name,
            tenant_id=tenant,
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
    """Rows of tables outside the restore that the deletes of a replace reach: the rows that
    reference deleted rows, and, through ON DELETE CASCADE, the rows that reference those in turn."""
    names = {t.name: t for t in work}
    effects: list[OutsideEffect] = []

    def reach(fk: ForeignKey, keys: sql.Composable, path: tuple[str, ...]) -> None:
        rows = count_rows(conn, referencing(fk, keys, sql.SQL("count(*)")), tenant)
        if not rows:
            return
        action = ACTIONS[fk.on_delete]
        via = " -> ".join((*path, fk.table))
        effects.append(
            OutsideEffect(
                table=fk.table, foreign_key=fk.name, references=fk.ref_table, rows=rows, action=action, via=via
            )
        )
        if action != "cascade" or len(path) > 8:
            return
        for deeper in catalog.fks_to(fk.table):  # the cascade deletes these rows: what references them?
            if deeper.table not in names and deeper.table not in path:
                reach(deeper, referencing(fk, keys, deeper_columns(deeper)), (*path, fk.table))

    for fk in catalog.foreign_keys:
        parent = names.get(fk.ref_table)
        if parent is not None and fk.table not in names:
            reach(fk, doomed_keys(fk, parent), (fk.ref_table,))
    return effects


def deeper_columns(fk: ForeignKey) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in fk.ref_columns)


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
        examples = sql.SQL("count(*), (array_agg(DISTINCT ROW({})::text))[1:3]").format(
            child.cols(list(fk.columns), "s")
        )
        row = conn.execute(dangling(fk, child.stage_ident(), examples)).fetchone()
        if row and row[0]:
            found.append(
                MissingReference(
                    table=fk.table, foreign_key=fk.name, references=fk.ref_table, rows=row[0], examples=row[1] or []
                )
            )
    return found


def refuse_rows_without_values(conn: psycopg.Connection, work: list[RestoreTable], tenant: str, backup_id: str) -> None:
    """A column added since the backup, NOT NULL with no default, has no value for the rows the
    restore would insert: refuse before writing, naming it (not a NotNullViolation halfway)."""
    for t in work:
        needy = [c.name for c in t.scope.columns if c.name in t.added and c.needs_a_value]
        if needy and (inserts := count_rows(conn, t.count_inserts(), tenant)):
            raise RestoreRefusedError(
                f"table {t.name} has column{'s' if len(needy) > 1 else ''} {', '.join(needy)} added since backup "
                f"{backup_id}, NOT NULL and without a default, so the {inserts} row(s) the restore would insert "
                f"have no value for it; give it a default (ALTER TABLE … ALTER COLUMN … SET DEFAULT …), then restore "
                "again; nothing was written",
                table=t.name,
                tenant_id=tenant,
                backup_id=backup_id,
            )


def refuse_unkeyed_cycles(order: RestoreOrder, work: dict[str, RestoreTable], backup_id: str) -> None:
    """A table without a key cannot have a foreign key set after its rows are in (how
    self-references and cycles are loaded when triggers must fire): refuse before any write."""
    for fk in order.broken:
        table = work[fk.table]
        if not table.keyed:
            raise RestoreRefusedError(
                f"table {fk.table} has no key (primary key or unique index of NOT NULL columns) and its foreign key "
                f"{fk.name} must be set after its rows are inserted, which needs one: give {fk.table} a primary "
                "key, make the foreign key DEFERRABLE, or restore as a role that may set session_replication_role",
                table=fk.table,
                backup_id=backup_id,
            )


def prepare_tables(
    catalog: Catalog,
    profile: Profile,
    manifest_tables: dict[str, TableManifest],
    source: str,
    target: str,
    tables: list[str] | None,
    backup_id: str,
) -> list[RestoreTable]:
    """The tables to restore (``tables``, or every one of the backup), each with its scope now and
    the backup's columns; refuses unknown and vanished tables, and, into another tenant, the
    tenant table itself."""
    prefix = f"{catalog.schema}."
    wanted = [
        t.removeprefix(prefix) if t.removeprefix(prefix) in manifest_tables else t for t in tables or manifest_tables
    ]
    unknown = [t for t in wanted if t not in manifest_tables]
    if unknown:
        raise RestoreRefusedError(
            f"backup {backup_id} holds no table {', '.join(unknown)}; it holds: {', '.join(sorted(manifest_tables))}",
            backup_id=backup_id,
        )
    gone = [t for t in wanted if t not in catalog.tables]
    if gone:
        raise RestoreRefusedError(
            f"table(s) {', '.join(gone)} of backup {backup_id} no longer exist in schema {catalog.schema!r}; "
            "restore the others with tables=[...]",
            backup_id=backup_id,
        )
    if source != target:
        tenant_table = find_tenant_table(catalog, profile)
        if tenant_table is not None and tables and tenant_table.name in wanted:
            raise RestoreRefusedError(
                f"table {tenant_table.name} is the tenant table: a restore into another tenant ({target}) never "
                f"copies tenant {source}'s own row over it; restore the other tables (--table), or into "
                f"tenant {source} itself; nothing was written",
                backup_id=backup_id,
                table=tenant_table.name,
            )
        if tenant_table is not None and tenant_table.name in wanted:
            wanted = [t for t in wanted if t != tenant_table.name]  # another tenant's own row stays its own
    scopes = {s.table: s for s in plan_scope(catalog, profile, wanted)}
    return [
        RestoreTable(scopes[name], [c.name for c in manifest_tables[name].columns if not c.generated])
        for name in wanted
    ]
