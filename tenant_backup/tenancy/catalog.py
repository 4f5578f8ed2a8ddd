"""What the PostgreSQL catalog says about the app's tables (read once per backup or restore).

:func:`read_catalog` reads, for a profile's schemas, every table (plain or partitioned; partitions
are reached through their parent, as the app sees them), its columns, its row key and every
foreign key from or to those tables (other schemas included: Supabase's ``auth.users``). The
scope of each table (how a tenant's rows are found) is decided by :mod:`tenancy.scope`.

Tables are named as a profile names them: ``ventes`` in the profile's default schema,
``billing.invoices`` elsewhere (:func:`display_name`, :func:`split_name`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.errors import ConfigurationError

__all__ = [
    "Catalog",
    "ColumnInfo",
    "ForeignKey",
    "Hop",
    "KeyKind",
    "TableInfo",
    "TableScope",
    "display_name",
    "qualified",
    "read_catalog",
    "split_name",
]

KeyKind = Literal["primary key", "unique index", "none"]


def qualified(schema: str, table: str) -> sql.Composed:
    """``"schema"."table"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def display_name(schema: str, relname: str, default_schema: str) -> str:
    """``relname`` in the default schema, else ``schema.relname``."""
    return relname if schema == default_schema else f"{schema}.{relname}"


def split_name(name: str, default_schema: str) -> tuple[str, str]:
    """The inverse of :func:`display_name` for a name a profile gives: ``billing.invoices`` ->
    (billing, invoices), ``ventes`` -> (default schema, ventes). (A profile cannot name a table
    of the default schema whose name holds a dot; discovery finds it.)"""
    schema, dot, relname = name.partition(".")
    return (schema, relname) if dot else (default_schema, name)


class ColumnInfo(BaseModel):
    """One column: its name, its PostgreSQL type as ``format_type`` prints it, and flags."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    not_null: bool = False
    generated: bool = False
    identity: bool = False
    has_default: bool = False

    @property
    def needs_a_value(self) -> bool:
        """NOT NULL with nothing to fill it in: an insert must give it a value."""
        return self.not_null and not (self.has_default or self.identity or self.generated)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str  # display names (see display_name)
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    not_null: bool
    on_delete: str = "a"  # pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null, d default
    deferrable: bool = False
    validated: bool = True  # False for a NOT VALID key: rows older than it may break it
    schema: str = "public"
    relname: str = ""
    ref_schema: str = "public"
    ref_relname: str = ""

    @property
    def cascade(self) -> bool:
        """ON DELETE CASCADE: the row belongs to its parent."""
        return self.on_delete == "c"

    def child(self) -> sql.Composed:
        return qualified(self.schema, self.relname or self.table)

    def parent(self) -> sql.Composed:
        return qualified(self.ref_schema, self.ref_relname or self.ref_table)


@dataclass(frozen=True)
class TableInfo:
    name: str  # display name
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    est_rows: int
    schema: str = "public"
    relname: str = ""
    oid: int = 0
    key: tuple[str, ...] = ()  # the primary key, else a unique index of NOT NULL columns; () = none
    key_kind: KeyKind = "none"
    partitioned: bool = False

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    def ident(self) -> sql.Composed:
        return qualified(self.schema, self.relname or self.name)


@dataclass(frozen=True)
class Catalog:
    schema: str  # the profile's default schema
    tables: dict[str, TableInfo]
    foreign_keys: tuple[ForeignKey, ...]
    outside: dict[str, TableInfo] = field(default_factory=dict)  # other schemas' tables the keys reach

    def table(self, name: str) -> TableInfo | None:
        """A table of the profile's schemas, or one outside them that a foreign key reaches."""
        return self.tables.get(name) or self.outside.get(name)

    def fks_from(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.table == table]

    def fks_to(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.ref_table == table]


class Hop(BaseModel):
    """One step along a foreign key: ``table(columns) -> ref_table(ref_columns)``."""

    model_config = ConfigDict(frozen=True)

    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    ref_schema: str = "public"
    ref_relname: str = ""

    def parent(self) -> sql.Composed:
        return qualified(self.ref_schema, self.ref_relname or self.ref_table)


class TableScope(BaseModel):
    """How one table's rows of a tenant are selected, and what the artifact records of it."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    table: str  # display name: the artifact's and the profile's name for it
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    path: tuple[Hop, ...] = ()
    tenant_column: str  # column compared with the tenant id, on the last table of ``path``
    est_rows: int = 0
    relname: str = ""
    key: tuple[str, ...] = ()
    key_kind: KeyKind = "none"

    @property
    def copied_columns(self) -> tuple[ColumnInfo, ...]:
        """Columns written to the artifact: generated ones are left to the database."""
        return tuple(c for c in self.columns if not c.generated)

    def ident(self) -> sql.Composed:
        """``"schema"."table"``."""
        return qualified(self.schema_name, self.relname or self.table)

    def describe(self) -> str:
        """Human-readable filter, e.g. ``lignes_vente.vente_id -> ventes.etablissement_id``."""
        parts = [f"{h.table}.{','.join(h.columns)}" for h in self.path]
        last = self.path[-1].ref_table if self.path else self.table
        return " -> ".join([*parts, f"{last}.{self.tenant_column}"])


# Plain and partitioned tables; a partition is read through its parent. est_rows of a
# partitioned table is the sum over its partitions.
_CATALOG_SQL = """
SELECT n.nspname, c.relname, c.oid::int8, c.relkind = 'p', a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.attgenerated <> '', a.attidentity <> '', a.atthasdef,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(greatest(p.reltuples, 0)), 0)::bigint
                                       FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid)
            ELSE greatest(c.reltuples, 0)::bigint END,
       coalesce(a.attnum = ANY(pk.conkey), false)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY n.nspname, c.relname, a.attnum
"""

# Unique indexes that can name a row: not partial, no expressions, every column NOT NULL. The
# replica identity index first, then the narrowest, then by name.
_KEY_SQL = """
SELECT i.indrelid::int8, array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE n.nspname = ANY(%s) AND i.indisunique AND NOT i.indisprimary AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL AND NOT 0 = ANY(i.indkey)
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                  AND NOT a.attnotnull)
ORDER BY i.indrelid, NOT i.indisreplident, i.indnatts, ic.relname
"""

# Top-level constraints only (conparentid = 0): a partition's copies of its parent's keys are
# not keys of their own. Either side in the profile's schemas.
_FK_SQL = """
SELECT con.conname, n.nspname, c.relname, rn.nspname, r.relname, c.oid::int8, r.oid::int8,
       array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       (SELECT bool_and(a.attnotnull) FROM pg_attribute a WHERE a.attrelid = con.conrelid
        AND a.attnum = ANY(con.conkey)),
       con.confdeltype::text, con.condeferrable, con.convalidated
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_class r ON r.oid = con.confrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0 AND (n.nspname = ANY(%s) OR rn.nspname = ANY(%s))
ORDER BY n.nspname, c.relname, con.conname
"""


def read_catalog(conn: psycopg.Connection, schema: str, other_schemas: Iterable[str] = ()) -> Catalog:
    """Read tables, columns, keys and foreign keys of ``schema`` (the default one, whose tables
    go by their bare names) and of ``other_schemas``."""
    schemas = sorted({schema, *other_schemas})
    columns: dict[int, list[ColumnInfo]] = {}
    pks: dict[int, list[str]] = {}
    meta: dict[int, tuple[str, str, bool, int]] = {}
    for nsp, rel, oid, partitioned, col, typ, not_null, generated, identity, default, rows, in_pk in conn.execute(
        _CATALOG_SQL, (schemas,)
    ):
        columns.setdefault(oid, []).append(
            ColumnInfo(
                name=col, type=typ, not_null=not_null, generated=generated, identity=identity, has_default=default
            )
        )
        meta[oid] = (nsp, rel, partitioned, rows)
        if in_pk:
            pks.setdefault(oid, []).append(col)
    unique: dict[int, tuple[str, ...]] = {}
    for oid, cols in conn.execute(_KEY_SQL, (schemas,)):
        unique.setdefault(oid, tuple(cols))
    tables: dict[str, TableInfo] = {}
    for oid, cols in columns.items():
        nsp, rel, partitioned, rows = meta[oid]
        pk = tuple(pks.get(oid, ()))
        key, kind = (pk, "primary key") if pk else ((unique[oid], "unique index") if oid in unique else ((), "none"))
        name = display_name(nsp, rel, schema)
        if name in tables:  # a dotted name in the default schema, and schema.table elsewhere
            other = tables[name]
            raise ConfigurationError(
                f"tables {other.schema}.{other.relname!r} and {nsp}.{rel!r} both go by the name {name!r}; rename "
                "one, or leave its schema out of the profile's schemas"
            )
        tables[name] = TableInfo(
            name=name,
            columns=tuple(cols),
            primary_key=pk,
            est_rows=rows,
            schema=nsp,
            relname=rel,
            oid=oid,
            key=key,
            key_kind=kind,  # type: ignore[arg-type]
            partitioned=partitioned,
        )
    rows = conn.execute(_FK_SQL, (schemas, schemas)).fetchall()
    # Tables outside the profile's schemas that a foreign key reaches (Supabase's auth.users):
    # what a restore reads of them is checked like the rest (privileges, row-level security).
    outside = {
        display_name(nsp, rel, schema): TableInfo(
            name=display_name(nsp, rel, schema),
            columns=(),
            primary_key=(),
            est_rows=0,
            schema=nsp,
            relname=rel,
            oid=oid,
        )
        for _, cn, cr, rn, rr, coid, roid, *_ in rows
        for nsp, rel, oid in ((cn, cr, coid), (rn, rr, roid))
        if display_name(nsp, rel, schema) not in tables
    }
    fks = tuple(
        ForeignKey(
            name=con,
            table=display_name(nsp, rel, schema),
            columns=tuple(cs),
            ref_table=display_name(rnsp, rrel, schema),
            ref_columns=tuple(rs),
            not_null=bool(nn),
            on_delete=od,
            deferrable=df,
            validated=bool(valid),
            schema=nsp,
            relname=rel,
            ref_schema=rnsp,
            ref_relname=rrel,
        )
        for con, nsp, rel, rnsp, rrel, _, _, cs, rs, nn, od, df, valid in rows
    )
    return Catalog(schema=schema, tables=tables, foreign_keys=fks, outside=outside)
