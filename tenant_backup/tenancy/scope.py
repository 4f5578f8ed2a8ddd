"""Each table's tenant scope, decided from the catalog (pure functions).

:func:`plan_scope` decides, for each table, how its tenant's rows are found: by its own tenant
column, or by following foreign keys to a table that has one (shortest path, NOT NULL foreign
keys first). The result is a list of :class:`TableScope` values that the SQL builders of
:mod:`tenancy.filters` turn into queries.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque

from tenant_backup.errors import ScopeError, UnknownCategoryError
from tenant_backup.tenancy.catalog import Catalog, Hop, TableScope
from tenant_backup.tenancy.profiles import Profile, TenantTable

__all__ = ["find_tenant_table", "not_this_profile", "plan_scope", "schema_fingerprint"]


def _references(catalog: Catalog) -> dict[tuple[str, str, str], int]:
    """How many single-column foreign keys of each (column, table referenced, its column) point
    into the profile's tables: where a tenant column shows itself."""
    counts: dict[tuple[str, str, str], int] = {}
    for fk in catalog.foreign_keys:
        if len(fk.columns) == 1 and len(fk.ref_columns) == 1 and fk.ref_table in catalog.tables:
            key = (fk.columns[0], fk.ref_table, fk.ref_columns[0])
            counts[key] = counts.get(key, 0) + 1
    return counts


def not_this_profile(catalog: Catalog, found: str) -> str:
    """A refusal of a profile that does not fit the database: what was ``found``, and what to pass."""
    return (
        f"{found}: it is not this database's profile (without --profile, it is pos); pass the right one "
        f"(--profile pos, crm or your own app.toml), or {_suggest_tenant_column(catalog)}"
    )


def _suggest_tenant_column(catalog: Catalog) -> str:
    """``--tenant-column C`` for the column that most tables point at one table with (an app's
    ``account_id``), else the option's bare form."""
    counts: dict[tuple[str, str], int] = {}
    for (column, table, _), n in _references(catalog).items():
        counts[(column, table)] = counts.get((column, table), 0) + n
    if not counts:
        return "--tenant-column COLUMN (the column that holds the tenant id)"
    (column, table), n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return f"--tenant-column {column} (it is the column of {n} table(s) that reference {table})"


def find_tenant_table(catalog: Catalog, profile: Profile) -> TenantTable | None:
    """The profile's tenant table, or the one the tenant column references most often."""
    if profile.tenant_table is not None:
        return profile.tenant_table
    counts = {
        (table, key): n for (column, table, key), n in _references(catalog).items() if column == profile.tenant_column
    }
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
                hop = Hop(
                    table=current,
                    columns=fk.columns,
                    ref_table=fk.ref_table,
                    ref_columns=fk.ref_columns,
                    ref_schema=fk.ref_schema,
                    ref_relname=fk.ref_relname,
                )
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
        if missing and not profile.categories:  # discovered (--tenant-column): the categories are tables
            known = [
                t for t in sorted(catalog.tables) if _path_to_tenant(catalog, t, profile.tenant_column, tenant_table)
            ]
            raise UnknownCategoryError(
                f"no table {', '.join(missing)} in {profile.describe_schemas()} holds tenants by "
                f"{profile.tenant_column!r}; with --tenant-column, --category names tables: choose among: "
                f"{', '.join(known)}"
            )
        if missing and len(missing) == len(tables) > 1:
            raise UnknownCategoryError(
                not_this_profile(
                    catalog,
                    f"none of the tables of profile {profile.name!r} ({', '.join(missing[:4])}, …) is in "
                    f"{profile.describe_schemas()}",
                )
            )
        if missing:
            raise UnknownCategoryError(
                f"table{'s' if len(missing) > 1 else ''} {', '.join(missing)} of profile {profile.name!r} "
                f"not found in {profile.describe_schemas()}; "
                "fix the profile (a table of another schema is named schema.table) or run the app's migrations"
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
                schema_name=info.schema,
                table=name,
                relname=info.relname,
                columns=info.columns,
                primary_key=info.primary_key,
                key=info.key,
                key_kind=info.key_kind,
                path=path,
                tenant_column=column,
                est_rows=info.est_rows,
            )
        )
    if not scopes:
        raise ScopeError(
            f"no table of {profile.describe_schemas()} has column {profile.tenant_column!r} or reaches one "
            "through foreign keys; check the tenant column (--tenant-column COLUMN) or the profile (--profile)"
        )
    return scopes


def schema_fingerprint(scopes: list[TableScope]) -> str:
    """sha256 of the backed-up tables' columns, types and keys: changes when the schema drifts."""
    doc = [
        [s.table, [[c.name, c.type, c.not_null, c.generated] for c in s.columns], list(s.primary_key)]
        for s in sorted(scopes, key=lambda s: s.table)
    ]
    return "sha256:" + hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
