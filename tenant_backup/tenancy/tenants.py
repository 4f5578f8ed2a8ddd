"""The tenants themselves: does one exist, what is its name, which are there, and which tables a
backup of one reads (for the access check)."""

from __future__ import annotations

from typing import NamedTuple

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError
from tenant_backup.tenancy.catalog import Catalog, TableInfo, TableScope
from tenant_backup.tenancy.profiles import Profile
from tenant_backup.tenancy.scope import find_tenant_table, not_this_profile

__all__ = [
    "Tenant",
    "TenantList",
    "Unlisted",
    "check_tenant",
    "left_out",
    "list_tenants",
    "tables_read",
    "unlisted_tenants",
]


def tables_read(
    catalog: Catalog, profile: Profile, scopes: list[TableScope], requested_by: str | None
) -> list[TableInfo]:
    """Every table a backup of ``scopes`` reads: the tables, those along their foreign-key paths,
    the tenant table, and the admin table when an app user asks."""
    names = {s.table for s in scopes} | {hop.ref_table for s in scopes for hop in s.path}
    tenant_table = find_tenant_table(catalog, profile)
    if tenant_table is not None:
        names.add(tenant_table.name)
    if requested_by and profile.admin is not None:
        names.add(profile.admin.table)
    return [catalog.tables[n] for n in sorted(names) if n in catalog.tables]


def _holders(catalog: Catalog, profile: Profile) -> list[TableInfo]:
    holders = [t for t in catalog.tables.values() if t.has_column(profile.tenant_column)]
    if not holders and profile.name.startswith("discovered:"):
        raise ConfigurationError(
            f"no table of {profile.describe_schemas()} has column {profile.tenant_column!r}; "
            "check --tenant-column (or the profile's tenant_column)"
        )
    if not holders:
        raise ConfigurationError(
            not_this_profile(
                catalog,
                f"profile {profile.name!r} holds tenants by column {profile.tenant_column!r}, which no table of "
                f"{profile.describe_schemas()} has",
            )
        )
    return holders


class Tenant(NamedTuple):
    """A tenant as the database spells its id (``AAAA…`` and ``{aaaa…}`` are one uuid), and its name."""

    id: str
    name: str | None


def check_tenant(
    conn: psycopg.Connection, catalog: Catalog, profile: Profile, tenant_id: str, *, allow_empty: bool = False
) -> Tenant:
    """The tenant, with its id in the database's own spelling (what the ledger, the lock and the
    storage folder use, so that one tenant never appears under two spellings) and its display
    name (None when the profile has none); raises when it does not exist.

    With a tenant table, the tenant exists when that table has its key, whatever its other
    columns. Without one, when some table holding the tenant column has a row of it, unless
    ``allow_empty`` (a tenant with no rows yet: its backup is empty).
    """
    table = find_tenant_table(catalog, profile)
    info = catalog.tables.get(table.name) if table is not None else None
    try:
        if table is not None and info is not None:
            name = sql.Identifier(table.display_name) if table.display_name else sql.SQL("NULL")
            key = sql.Identifier(table.key)
            row = conn.execute(
                sql.SQL("SELECT {}::text, {}::text FROM {} WHERE {} = %s").format(key, name, info.ident(), key),
                (tenant_id,),
            ).fetchone()
            if row is None:
                raise ConfigurationError(
                    f"tenant {tenant_id} does not exist: table {table.name} has no row with {table.key} = "
                    f"{tenant_id!r}; check the tenant id (tenant-backup lists backups, the app lists its tenants)",
                    tenant_id=tenant_id,
                )
            return Tenant(str(row[0]), str(row[1]) if row[1] is not None else None)
        holders = _holders(catalog, profile)
        column = next(c for c in holders[0].columns if c.name == profile.tenant_column)
        canonical = conn.execute(sql.SQL("SELECT CAST(%s AS {})::text").format(sql.SQL(column.type)), (tenant_id,))
        spelled = str((canonical.fetchone() or (tenant_id,))[0])
        if not allow_empty:
            exists = sql.SQL(" OR ").join(
                sql.SQL("EXISTS (SELECT 1 FROM {} WHERE {} = %(tenant)s)").format(
                    t.ident(), sql.Identifier(profile.tenant_column)
                )
                for t in holders
            )
            row = conn.execute(sql.SQL("SELECT {}").format(exists), {"tenant": spelled}).fetchone()
            if row is None or not row[0]:
                raise ConfigurationError(
                    f"tenant {tenant_id} has no row in any table with column {profile.tenant_column!r}: check the "
                    "tenant id, or pass --allow-empty (allow_empty=True) to back up a tenant that has no rows yet",
                    tenant_id=tenant_id,
                )
        return Tenant(spelled, None)
    except psycopg.errors.DataError as exc:
        where = f"{table.name}.{table.key}" if table is not None else profile.tenant_column
        raise ConfigurationError(
            f"tenant id {tenant_id!r} is not a valid value of {where} "
            f"({str(exc).strip().splitlines()[0]}); check the tenant id",
            tenant_id=tenant_id,
        ) from exc


def list_tenants(conn: psycopg.Connection, catalog: Catalog, profile: Profile) -> list[Tenant]:
    """Every tenant, with its name: the tenant table's rows, else the distinct values of the tenant
    column (no names then)."""
    table = find_tenant_table(catalog, profile)
    if table is not None and table.name in catalog.tables:
        name = sql.Identifier(table.display_name) if table.display_name else sql.SQL("NULL")
        query = sql.SQL("SELECT {}::text, {}::text FROM {} ORDER BY 1").format(
            sql.Identifier(table.key), name, catalog.tables[table.name].ident()
        )
    else:
        query = sql.SQL(" UNION ").join(
            sql.SQL("SELECT {}::text, NULL::text FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(profile.tenant_column), t.ident(), sql.Identifier(profile.tenant_column)
            )
            for t in _holders(catalog, profile)
        ) + sql.SQL(" ORDER BY 1")
    return [Tenant(str(row[0]), row[1]) for row in conn.execute(query)]


class Unlisted(NamedTuple):
    """A tenant id that rows hold but the tenant table does not list: a backup of every tenant
    does not reach those rows, so it must say so instead of calling itself complete."""

    id: str
    rows: dict[str, int]  # table -> rows holding the id
    tenant_table: str

    def reason(self) -> str:
        where = ", ".join(f"{table} ({n:,})" for table, n in self.rows.items())
        return (
            f"{sum(self.rows.values()):,} rows hold tenant id {self.id}, which table {self.tenant_table} does not "
            f"list, so no backup holds them: {where}. Add the tenant's row to {self.tenant_table} (its next "
            f"backup takes them), or delete those rows; a foreign key to {self.tenant_table} keeps it from "
            "happening again"
        )


class TenantList(NamedTuple):
    """Every tenant, and the tenant ids that rows hold but the tenant table does not list."""

    tenants: list[Tenant]
    unlisted: list[Unlisted]


def unlisted_tenants(conn: psycopg.Connection, catalog: Catalog, profile: Profile) -> list[Unlisted]:
    """Tenant ids held by rows of the tables with the tenant column but missing from the tenant
    table. A table whose tenant column has a validated foreign key to the tenant table cannot
    hold one and is not read; without a tenant table, the tenants are those ids, so none is missing."""
    table = find_tenant_table(catalog, profile)
    info = catalog.tables.get(table.name) if table is not None else None
    if table is None or info is None:
        return []
    guarded = {
        fk.table
        for fk in catalog.foreign_keys
        if fk.validated
        and fk.columns == (profile.tenant_column,)
        and fk.ref_table == table.name
        and fk.ref_columns == (table.key,)
    }
    found: dict[str, dict[str, int]] = {}
    column = sql.Identifier(profile.tenant_column)
    for holder in _holders(catalog, profile):
        if holder.name in guarded or holder.name == table.name:
            continue
        query = sql.SQL(
            "SELECT h.{col}::text, count(*) FROM {holder} h WHERE h.{col} IS NOT NULL AND NOT EXISTS "
            "(SELECT FROM {tenants} t WHERE t.{key} = h.{col}) GROUP BY 1 ORDER BY 1"
        ).format(col=column, holder=holder.ident(), tenants=info.ident(), key=sql.Identifier(table.key))
        for tenant_id, rows in conn.execute(query):
            found.setdefault(str(tenant_id), {})[holder.name] = int(rows)
    return [Unlisted(tenant_id, rows, table.name) for tenant_id, rows in sorted(found.items())]


_HOLDERS_ELSEWHERE = """
SELECT DISTINCT n.nspname, c.relname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""


def left_out(
    conn: psycopg.Connection, catalog: Catalog, profile: Profile, scopes: list[TableScope], ledger_schema: str
) -> list[str]:
    """Tables that hold the tenant column and that this backup leaves out: in the profile's
    schemas but in no category (or excluded), or in another schema. A backup says so, so that
    "full" never silently means "full but for these"."""
    backed_up = {s.table for s in scopes}
    here = [t.name for t in catalog.tables.values() if t.has_column(profile.tenant_column) and t.name not in backed_up]
    rows = conn.execute(_HOLDERS_ELSEWHERE, (profile.tenant_column, [*profile.schemas, ledger_schema])).fetchall()
    return sorted(here) + [f"{nsp}.{rel}" for nsp, rel in rows]
