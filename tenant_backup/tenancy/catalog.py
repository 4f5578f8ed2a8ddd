"""Tenant scope from the PostgreSQL catalog.

:func:`read_catalog` reads tables, columns, primary keys and foreign keys of one schema;
:func:`plan_scope` (pure) decides, for each table, how its tenant's rows are found: by its own
tenant column, or by following foreign keys to a table that has one (shortest path, NOT NULL
foreign keys first). The result is a list of :class:`TableScope` values that the SQL builders
turn into queries.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass

import psycopg
from pydantic import BaseModel, ConfigDict

from tenant_backup.errors import ScopeError, UnknownCategoryError
from tenant_backup.tenancy.profiles import Profile, TenantTable

__all__ = [
    "Catalog",
    "ColumnInfo",
    "ForeignKey",
    "Hop",
    "TableInfo",
    "TableScope",
    "find_tenant_table",
    "plan_scope",
    "read_catalog",
    "schema_fingerprint",
]


class ColumnInfo(BaseModel):
    """One column: its name, its PostgreSQL type as ``format_type`` prints it, and flags."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    not_null: bool = False
    generated: bool = False
    identity: bool = False


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    not_null: bool
    on_delete: str = "a"  # pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null, d default
    deferrable: bool = False

    @property
    def cascade(self) -> bool:
        """ON DELETE CASCADE: the row belongs to its parent."""
        return self.on_delete == "c"


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    est_rows: int

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)


@dataclass(frozen=True)
class Catalog:
    schema: str
    tables: dict[str, TableInfo]
    foreign_keys: tuple[ForeignKey, ...]

    def fks_from(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.table == table]


class Hop(BaseModel):
    """One step along a foreign key: ``table(columns) -> ref_table(ref_columns)``."""

    model_config = ConfigDict(frozen=True)

    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


class TableScope(BaseModel):
    """How one table's rows of a tenant are selected, and what the artifact records of it."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    table: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    path: tuple[Hop, ...] = ()
    tenant_column: str  # column compared with the tenant id, on the last table of ``path``
    est_rows: int = 0

    @property
    def copied_columns(self) -> tuple[ColumnInfo, ...]:
        """Columns written to the artifact: generated ones are left to the database."""
        return tuple(c for c in self.columns if not c.generated)

    def describe(self) -> str:
        """Human-readable filter, e.g. ``lignes_vente.vente_id -> ventes.etablissement_id``."""
        parts = [f"{h.table}.{','.join(h.columns)}" for h in self.path]
        last = self.path[-1].ref_table if self.path else self.table
        return " -> ".join([*parts, f"{last}.{self.tenant_column}"])


_CATALOG_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attgenerated <> '', a.attidentity <> '', greatest(c.reltuples, 0)::bigint,
       coalesce(a.attnum = ANY(pk.conkey), false)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname, a.attnum
"""

_FK_SQL = """
SELECT con.conname, c.relname, r.relname,
       array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       bool_and(a.attnotnull), con.confdeltype::text, con.condeferrable
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_class r ON r.oid = con.confrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
WHERE con.contype = 'f' AND n.nspname = %s AND rn.nspname = %s
GROUP BY con.oid, c.relname, r.relname
ORDER BY c.relname, con.conname
"""


def read_catalog(conn: psycopg.Connection, schema: str) -> Catalog:
    """Read tables, columns, primary keys and foreign keys of ``schema``."""
    columns: dict[str, list[ColumnInfo]] = {}
    pks: dict[str, list[str]] = {}
    est: dict[str, int] = {}
    for table, col, typ, not_null, generated, identity, rows, in_pk in conn.execute(_CATALOG_SQL, (schema,)):
        columns.setdefault(table, []).append(
            ColumnInfo(name=col, type=typ, not_null=not_null, generated=generated, identity=identity)
        )
        est[table] = rows
        if in_pk:
            pks.setdefault(table, []).append(col)
    tables = {
        name: TableInfo(name=name, columns=tuple(cols), primary_key=tuple(pks.get(name, ())), est_rows=est[name])
        for name, cols in columns.items()
    }
    fks = tuple(
        ForeignKey(
            name=n,
            table=t,
            columns=tuple(cs),
            ref_table=r,
            ref_columns=tuple(rs),
            not_null=nn,
            on_delete=od,
            deferrable=df,
        )
        for n, t, r, cs, rs, nn, od, df in conn.execute(_FK_SQL, (schema, schema))
    )
    return Catalog(schema=schema, tables=tables, foreign_keys=fks)


def find_tenant_table(catalog: Catalog, profile: Profile) -> TenantTable | None:
    """The profile's tenant table, or the one the tenant column references most often."""
    if profile.tenant_table is not None:
        return profile.tenant_table
    counts: dict[tuple[str, str], int] = {}
    for fk in catalog.foreign_keys:
        if fk.columns == (profile.tenant_column,) and len(fk.ref_columns) == 1:
            target = (fk.ref_table, fk.ref_columns[0])
            counts[target] = counts.get(target, 0) + 1
    if not counts:
        return None
    (name, key), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    info = catalog.tables[name]
    display = next((c for c in ("nom", "name", "display_name", "title", "label") if info.has_column(c)), None)
    return TenantTable(name=name, key=key, display_name=display)


def _path_to_tenant(
    catalog: Catalog, table: str, tenant_column: str, tenant_table: TenantTable | None
) -> tuple[tuple[Hop, ...], str] | None:
    """Shortest foreign-key path from ``table`` to a table that identifies the tenant.

    NOT NULL foreign keys are tried first: a row whose nullable key is NULL cannot be tied to a
    tenant along that path. Among paths of one length, ON DELETE CASCADE keys come first: they
    say whose row it is (a sale line belongs to its sale, not to the product it names).
    Self-references never help and are skipped.
    """

    def anchor(name: str) -> str | None:
        if tenant_table is not None and name == tenant_table.name:
            return tenant_table.key
        return tenant_column if catalog.tables[name].has_column(tenant_column) else None

    for only_not_null in (True, False):
        queue: deque[tuple[str, tuple[Hop, ...]]] = deque([(table, ())])
        seen = {table}
        while queue:
            current, path = queue.popleft()
            column = anchor(current)
            if column is not None:
                return path, column
            for fk in sorted(catalog.fks_from(current), key=lambda fk: (not fk.cascade, fk.name)):
                if fk.ref_table in seen or fk.ref_table not in catalog.tables:
                    continue
                if only_not_null and not fk.not_null:
                    continue
                seen.add(fk.ref_table)
                hop = Hop(table=current, columns=fk.columns, ref_table=fk.ref_table, ref_columns=fk.ref_columns)
                queue.append((fk.ref_table, (*path, hop)))
    return None


def plan_scope(catalog: Catalog, profile: Profile, tables: list[str] | None) -> list[TableScope]:
    """The scope of each table: ``tables`` (from a profile), or every table reaching the tenant.

    Raises :class:`UnknownCategoryError` for a table missing from the schema and
    :class:`ScopeError` for a named table that cannot be tied to a tenant.
    """
    tenant_table = find_tenant_table(catalog, profile)
    if tables is not None:
        missing = [t for t in tables if t not in catalog.tables]
        if missing:
            raise UnknownCategoryError(
                f"table{'s' if len(missing) > 1 else ''} {', '.join(missing)} of profile {profile.name!r} "
                f"not found in schema {catalog.schema!r}; fix the profile or run the app's migrations"
            )
        names = tables
    else:
        names = sorted(t for t in catalog.tables if t not in profile.exclude_tables)
    scopes: list[TableScope] = []
    for name in names:
        found = _path_to_tenant(catalog, name, profile.tenant_column, tenant_table)
        if found is None:
            if tables is not None:
                raise ScopeError(
                    f"table {name!r} has no column {profile.tenant_column!r} and no foreign key path to a "
                    f"table that has one; add it to exclude_tables or give it the tenant column",
                    table=name,
                )
            continue  # discovery: shared tables (no tenant) are not part of a tenant's backup
        path, column = found
        info = catalog.tables[name]
        scopes.append(
            TableScope(
                schema_name=catalog.schema,
                table=name,
                columns=info.columns,
                primary_key=info.primary_key,
                path=path,
                tenant_column=column,
                est_rows=info.est_rows,
            )
        )
    if not scopes:
        raise ScopeError(
            f"no table of schema {catalog.schema!r} has column {profile.tenant_column!r} or reaches one; "
            "check --tenant-column or the profile"
        )
    return scopes


def schema_fingerprint(scopes: list[TableScope]) -> str:
    """sha256 of the backed-up tables' columns, types and keys: changes when the schema drifts."""
    doc = [
        [s.table, [[c.name, c.type, c.not_null, c.generated] for c in s.columns], list(s.primary_key)]
        for s in sorted(scopes, key=lambda s: s.table)
    ]
    return "sha256:" + hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
