"""Restore one tenant's rows from a verified artifact: plan, then apply in one transaction.

Every table's CSV is streamed with ``COPY … FROM STDIN`` into a temporary staging table typed
like the target table; then set-based SQL compares staging with the tenant's current rows:

* insert the rows whose key is missing (parents first),
* update the rows whose key exists and whose values differ (unchanged rows are not touched),
* with ``replace``, delete the tenant's rows whose key is not in the backup (children first).

All of it runs in one transaction under the tenant's advisory lock and a ``lock_timeout``;
before commit the tenant's rows are compared with staging (counts, and ``EXCEPT ALL`` both ways)
and any difference rolls everything back. ``session_replication_role = replica`` is used when
the role may set it (superuser, ``GRANT SET ON PARAMETER``, Supabase's allow-list): the app's
triggers do not re-fire and foreign keys are then checked set-based before commit; otherwise
rows go in foreign-key order, self-references and cycles are inserted NULL and set after, and
the app's triggers fire as for any write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel

from tenant_backup.catalog import Catalog, TableScope, find_tenant_table, plan_scope, read_catalog
from tenant_backup.errors import RestoreCheckError, RestoreRefusedError, TenantBusyError
from tenant_backup.manifest import TableManifest
from tenant_backup.order import RestoreOrder, restore_order
from tenant_backup.profiles import Profile, discovered_profile
from tenant_backup.progress import Progress, publish
from tenant_backup.reader import Artifact
from tenant_backup.sqlbuild import qualified, tenant_filter

__all__ = ["OutsideEffect", "RestorePlan", "TableChange", "restore_tenant"]

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


class RestorePlan(BaseModel):
    backup_id: str
    source_tenant: str
    tenant_id: str
    mode: Mode
    applied: bool
    tables: list[TableChange]
    outside: list[OutsideEffect]
    dropped_columns: dict[str, list[str]]
    added_columns: dict[str, list[str]]
    triggers: Literal["skipped", "fired"]

    @property
    def totals(self) -> tuple[int, int, int]:
        return (
            sum(t.inserted for t in self.tables),
            sum(t.updated for t in self.tables),
            sum(t.deleted for t in self.tables),
        )


class _Table:
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

    def comparable(self, alias: str) -> sql.Composable:
        """The common columns of ``alias`` as a row that has an equality operator."""
        parts = [
            sql.SQL("{}::text").format(sql.Identifier(alias, c))
            if self.types[c].split("(")[0].split("[")[0] in _NO_EQUALITY
            else sql.Identifier(alias, c)
            for c in self.common
        ]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))

    def key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c)) for c in self.pk
        )

    def current(self, columns: list[str]) -> sql.Composable:
        """The tenant's current rows: ``SELECT columns FROM target WHERE <tenant filter>``."""
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            self.cols(columns), self.target(), tenant_filter(self.scope)
        )


def _count(conn: psycopg.Connection, query: sql.Composed, tenant: str) -> int:
    row = conn.execute(query, {"tenant": tenant}).fetchone()
    return int(row[0]) if row else 0


def restore_tenant(
    conn: psycopg.Connection,
    artifact: Artifact,
    *,
    backup_id: str,
    target_tenant: str,
    mode: Mode,
    tables: list[str] | None,
    apply: bool,
    lock_timeout: str,
    before_commit: Callable[[RestorePlan], None] | None = None,
) -> RestorePlan:
    """Plan (and with ``apply``, perform) the restore in one transaction on ``conn`` (autocommit).

    Without ``apply`` everything is rolled back: the plan's counts are what an apply would do now.
    """
    manifest = artifact.manifest
    profile = (
        Profile.model_validate(manifest.profile_doc)
        if manifest.profile_doc
        else discovered_profile(manifest.tenant_column, manifest.db_schema)
    )
    with conn.transaction():
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenant-backup'), hashtext(%s))", (target_tenant,))
        except pg_errors.LockNotAvailable as exc:
            raise TenantBusyError(
                f"another backup or restore of tenant {target_tenant} is running; wait for it, then run again",
                tenant_id=target_tenant,
                backup_id=backup_id,
            ) from exc
        replica = _try_replica(conn)
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        catalog = read_catalog(conn, manifest.db_schema)
        work = _prepare(catalog, profile, manifest.tables, manifest.tenant_id, target_tenant, tables, backup_id)
        order = restore_order([t.name for t in work], catalog.foreign_keys)
        by_name = {t.name: t for t in work}
        ordered = [by_name[n] for n in order.tables]
        for t in ordered:
            _stage(conn, artifact, t, target_tenant if target_tenant != manifest.tenant_id else None)
        changes = [_changes(conn, t, target_tenant, mode, manifest.tables[t.name].rows) for t in ordered]
        outside = _outside(conn, catalog, ordered, target_tenant) if mode == "replace" else []
        plan = RestorePlan(
            backup_id=backup_id,
            source_tenant=manifest.tenant_id,
            tenant_id=target_tenant,
            mode=mode,
            applied=False,
            tables=changes,
            outside=outside,
            dropped_columns={t.name: t.dropped for t in ordered if t.dropped},
            added_columns={t.name: t.added for t in ordered if t.added},
            triggers="skipped" if replica else "fired",
        )
        if not apply:
            raise psycopg.Rollback()
        blocked = [o for o in outside if o.action == "block" and o.rows]
        if blocked:
            raise RestoreRefusedError(
                "the restore would delete rows that other tables still reference: "
                + "; ".join(f"{o.rows} row(s) of {o.table} via {o.foreign_key}" for o in blocked)
                + "; restore those tables too (or use mode=merge)",
                tenant_id=target_tenant,
                backup_id=backup_id,
            )
        if replica and any(o.rows for o in outside):
            # Replica mode skips the cascades these rows need: let the database do them.
            conn.execute("SET LOCAL session_replication_role = origin")
            replica = False
            plan = plan.model_copy(update={"triggers": "fired"})
        _apply(conn, ordered, order, target_tenant, mode, broken=not replica)
        _move_sequences(conn, ordered)
        _check(conn, catalog, ordered, target_tenant, mode, fk_check=replica)
        plan = plan.model_copy(update={"applied": True})
        if before_commit is not None:
            before_commit(plan)
    return plan


def _try_replica(conn: psycopg.Connection) -> bool:
    """``SET LOCAL session_replication_role = replica`` if this role may; False otherwise."""
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the restore
            conn.execute("SET LOCAL session_replication_role = replica")
        return True
    except pg_errors.InsufficientPrivilege:
        return False


def _prepare(
    catalog: Catalog,
    profile: Profile,
    manifest_tables: dict[str, TableManifest],
    source: str,
    target: str,
    tables: list[str] | None,
    backup_id: str,
) -> list[_Table]:
    wanted = tables or list(manifest_tables)
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
        if tenant_table is not None and tenant_table.name in wanted:
            wanted = [t for t in wanted if t != tenant_table.name]  # another tenant's own row stays its own
    scopes = {s.table: s for s in plan_scope(catalog, profile, wanted)}
    work: list[_Table] = []
    for i, name in enumerate(wanted):
        columns = [c.name for c in manifest_tables[name].columns if not c.generated]
        table = _Table(scopes[name], columns, f"tb_stage_{i}")
        missing_pk = [c for c in table.pk if c not in table.common]
        if not table.pk or missing_pk:
            raise RestoreRefusedError(
                f"table {name} has no primary key that the backup carries; restore matches rows by key",
                table=name,
                backup_id=backup_id,
            )
        work.append(table)
    return work


def _stage(conn: psycopg.Connection, artifact: Artifact, t: _Table, rewrite_tenant: str | None) -> None:
    """COPY the table's CSV into a temporary table typed like the target (dropped columns as text)."""
    select = sql.SQL(", ").join(
        sql.SQL("NULL::text AS {}").format(sql.Identifier(c)) if c in t.dropped else sql.Identifier(c)
        for c in t.backup_columns
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(t.stage), select, t.target()
        )
    )
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier(t.stage), t.cols(t.backup_columns)
    )
    with artifact.open_table(t.name) as source, conn.cursor() as cur, cur.copy(copy_in) as copy:
        while data := source.read(_CHUNK):
            copy.write(data)
    column = t.scope.tenant_column
    if rewrite_tenant is not None and not t.scope.path and column in t.common:
        conn.execute(
            sql.SQL("UPDATE {} SET {} = %s").format(sql.Identifier(t.stage), sql.Identifier(column)), (rewrite_tenant,)
        )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(t.stage)))
    publish(Progress(tenant_id=rewrite_tenant or "", table=t.name, rows=0, bytes=0, done=True))


def _changes(conn: psycopg.Connection, t: _Table, tenant: str, mode: Mode, rows: int) -> TableChange:
    stage = sql.Identifier(t.stage)
    conflicts = _count(
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
    inserted = _count(
        conn,
        sql.SQL("SELECT count(*) FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})").format(
            stage, t.target(), t.key_match("x", "s")
        ),
        tenant,
    )
    updated = _count(
        conn,
        sql.SQL("SELECT count(*) FROM {} s JOIN ({}) c ON {} WHERE {} IS DISTINCT FROM {}").format(
            stage, t.current(t.common), t.key_match("c", "s"), t.comparable("c"), t.comparable("s")
        ),
        tenant,
    )
    deleted = 0
    if mode == "replace":
        deleted = _count(
            conn,
            sql.SQL("SELECT count(*) FROM ({}) c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
                t.current(t.pk), stage, t.key_match("s", "c")
            ),
            tenant,
        )
    return TableChange(table=t.name, rows=rows, inserted=inserted, updated=updated, deleted=deleted)


_ACTIONS: dict[str, Literal["cascade", "set null", "set default", "block"]] = {
    "c": "cascade",
    "n": "set null",
    "d": "set default",
    "a": "block",
    "r": "block",
}


def _outside(conn: psycopg.Connection, catalog: Catalog, work: list[_Table], tenant: str) -> list[OutsideEffect]:
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
        rows = _count(
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
                    action=_ACTIONS[fk.on_delete],
                )
            )
    return effects


def _apply(
    conn: psycopg.Connection, work: list[_Table], order: RestoreOrder, tenant: str, mode: Mode, *, broken: bool
) -> None:
    """Insert (parents first), update, then delete (children first)."""
    nulled: dict[str, set[str]] = {t.name: set() for t in work}
    if broken:
        for fk in order.broken:
            nulled[fk.table].update(fk.columns)
    for t in work:
        values = sql.SQL(", ").join(
            sql.SQL("NULL") if c in nulled[t.name] else sql.Identifier("s", c) for c in t.common
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} s "
                "WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})"
            ).format(t.target(), t.cols(t.common), values, sql.Identifier(t.stage), t.target(), t.key_match("x", "s")),
            {"tenant": tenant},
        )
    for t in work:
        if len(t.common) == len(t.pk):
            continue  # nothing but the key: nothing to update
        non_key = [c for c in t.common if c not in t.pk]
        conn.execute(
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
        )
    if mode == "replace":
        for t in reversed(work):
            conn.execute(
                sql.SQL("DELETE FROM {} x WHERE ({}) IN ({}) AND NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
                    t.target(), t.cols(t.pk, "x"), t.current(t.pk), sql.Identifier(t.stage), t.key_match("s", "x")
                ),
                {"tenant": tenant},
            )


def _move_sequences(conn: psycopg.Connection, work: list[_Table]) -> None:
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


def _check(
    conn: psycopg.Connection,
    catalog: Catalog,
    work: list[_Table],
    tenant: str,
    mode: Mode,
    *,
    fk_check: bool,
) -> None:
    """Before commit: the tenant's rows equal the backup's (replace) or contain them (merge);
    in replica mode, no foreign key of a restored row points at a missing row."""
    for t in work:
        current = sql.SQL("SELECT {} FROM ({}) c").format(_as_text_row(t, "c"), t.current(t.common))
        staged = sql.SQL("SELECT {} FROM {} c").format(_as_text_row(t, "c"), sql.Identifier(t.stage))
        missing = _count(conn, sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) d").format(staged, current), tenant)
        extra = 0
        if mode == "replace":
            extra = _count(conn, sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) d").format(current, staged), tenant)
        if missing or extra:
            raise RestoreCheckError(
                f"after restore, table {t.name} of tenant {tenant} differs from the backup ({missing} row(s) missing, "
                f"{extra} extra); rolled back, nothing changed",
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
            orphans = _count(
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


def _as_text_row(t: _Table, alias: str) -> sql.Composable:
    """The common columns, with types lacking equality cast to text, as a select list."""
    return sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(alias, c))
        if t.types[c].split("(")[0].split("[")[0] in _NO_EQUALITY
        else sql.Identifier(alias, c)
        for c in t.common
    )
