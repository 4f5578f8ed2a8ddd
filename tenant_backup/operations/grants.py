"""``tenant-backup grants``: the least a database role needs to back up (and, with ``restore``,
to restore) the tenants of a profile, as SQL to read or to apply.

A backup role may read what a backup reads (the profile's tables, the tables along their
foreign-key paths, the tenant and admin tables) and write the ledger; nothing else of the app.
A restore role may also write the restored tables and their sequences, read the tables whose
rows reference them (a replace counts what its deletes reach), create temporary tables
(staging), and optionally set ``session_replication_role`` (PostgreSQL 15's ``GRANT SET ON
PARAMETER``: the app's triggers then do not re-fire on restored rows). Where row-level security
is on, reading every row needs ``BYPASSRLS`` (or the tables' owner): said, and granted with
``apply`` when the session may.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError
from tenant_backup.tenancy.catalog import Catalog, TableInfo
from tenant_backup.tenancy.profiles import Profile
from tenant_backup.tenancy.scope import plan_scope
from tenant_backup.tenancy.tenants import tables_read

__all__ = ["grant_statements"]

# What the ledger's tables need: backups are written and pruned, schedules stamped, actions logged,
# a tenant's own key made on its first backup with --tenant-key (erase-tenant is the operator's).
_LEDGER = {
    "backups": "SELECT, INSERT, UPDATE, DELETE",
    "backup_restore_logs": "SELECT, INSERT, UPDATE",
    "backup_schedules": "SELECT, UPDATE",
    "tenant_keys": "SELECT, INSERT",
}


def _tables(names: list[TableInfo]) -> sql.Composable:
    return sql.SQL(", ").join(t.ident() for t in names)


def grant_statements(
    conn: psycopg.Connection,
    catalog: Catalog,
    profile: Profile,
    categories: list[str] | None,
    role: str,
    *,
    restore: bool,
    ledger_schema: str,
) -> list[sql.Composed]:
    """The GRANTs (and ALTER ROLE) for ``role``, in the order they can be run."""
    if conn.execute("SELECT to_regrole(%s)", (role,)).fetchone() == (None,):
        raise ConfigurationError(
            f"role {role} does not exist: create it first (CREATE ROLE {role} LOGIN PASSWORD '…'), then run grants"
        )
    tables = profile.tables_for(categories) if profile.categories else categories
    scopes = plan_scope(catalog, profile, tables)
    read = {t.name: t for t in tables_read(catalog, profile, scopes, None)}
    if profile.admin is not None and (admin := catalog.table(profile.admin.table)) is not None:
        read[admin.name] = admin  # an app user's request is checked against it
    written = [catalog.tables[s.table] for s in scopes]
    if restore:
        names = {t.name for t in written}
        for fk in catalog.foreign_keys:
            if fk.ref_table in names and (referencing := catalog.table(fk.table)) is not None:
                read.setdefault(referencing.name, referencing)
            if fk.table in names and (parent := catalog.table(fk.ref_table)) is not None:
                read.setdefault(parent.name, parent)
    who = sql.Identifier(role)
    schemas = sorted({t.schema for t in read.values()} | {ledger_schema})
    database = sql.Identifier(conn.info.dbname)
    out = [
        sql.SQL("GRANT CONNECT{} ON DATABASE {} TO {}").format(sql.SQL(", TEMP" if restore else ""), database, who),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.SQL(", ").join(map(sql.Identifier, schemas)), who),
        sql.SQL("GRANT SELECT ON {} TO {}").format(_tables(sorted(read.values(), key=lambda t: t.name)), who),
    ]
    out += [
        sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), sql.Identifier(ledger_schema, table), who)
        for table, privileges in _LEDGER.items()
    ]
    if restore:
        out.append(sql.SQL("GRANT INSERT, UPDATE, DELETE ON {} TO {}").format(_tables(written), who))
        sequences = conn.execute(
            "SELECT DISTINCT n.nspname, s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
            "AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace WHERE d.refobjid = ANY(%s::oid[]) "
            "AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') ORDER BY 1, 2",
            ([t.oid for t in written],),
        ).fetchall()
        if sequences:
            out.append(
                sql.SQL("GRANT USAGE, UPDATE ON SEQUENCE {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(nsp, rel) for nsp, rel in sequences), who
                )
            )
        if conn.info.server_version >= 150000:  # GRANT SET ON PARAMETER is PostgreSQL 15's
            out.append(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(who))
    secured = conn.execute(
        "SELECT count(*) FROM pg_class WHERE oid = ANY(%s::oid[]) AND relrowsecurity",
        ([t.oid for t in read.values()],),
    ).fetchone()
    if secured and secured[0]:
        out.append(sql.SQL("ALTER ROLE {} BYPASSRLS").format(who))
    return out
