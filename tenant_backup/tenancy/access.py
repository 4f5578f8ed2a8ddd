"""May this database role do what a backup or a restore needs? Checked before anything is written.

Every session runs with ``row_security = off`` (as pg_dump does), so a table whose row-level
security applies to the role makes PostgreSQL raise an error instead of silently hiding rows:
a backup that says "completed" has every row. This module asks PostgreSQL up front, for every
table a step will read or write, whether row security applies to the role
(``row_security_active``) and whether the role holds the privileges the step needs, and refuses
with one message that names the tables, the role and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

from tenant_backup.errors import RoleAccessError
from tenant_backup.tenancy.catalog import TableInfo

__all__ = ["check_access", "row_security_refusal"]

_SUPABASE = "on Supabase, the postgres role's connection string (not an anon or authenticated role)"

_ACCESS_SQL = """
SELECT t.oid, row_security_active(t.oid::regclass), c.relforcerowsecurity, pg_get_userbyid(c.relowner),
       array(SELECT p FROM unnest(string_to_array(t.privileges, ',')) p WHERE NOT has_table_privilege(t.oid, p)),
       array(SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname) FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
             WHERE d.refobjid = t.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
             AND 'INSERT' = ANY(string_to_array(t.privileges, ','))
             AND CASE WHEN s.relkind = 'S' THEN NOT has_sequence_privilege(s.oid, 'UPDATE') END)
FROM unnest(%s::oid[], %s::text[]) AS t(oid, privileges)
JOIN pg_class c ON c.oid = t.oid
"""


def check_access(
    conn: psycopg.Connection,
    needs: Mapping[TableInfo, Iterable[str]],
    *,
    action: str,
    tenant_id: str,
    temp_tables: bool = False,
) -> None:
    """Refuse unless the session's role holds ``needs[table]`` (SELECT, INSERT, …) on every table,
    UPDATE on the sequences of the tables it inserts into, TEMP on the database when
    ``temp_tables``, and row-level security applies to none of the tables.

    ``action`` completes "role R cannot … tenant T": "back up", "restore into", "verify a backup of".
    """
    wanted = {t.oid: (t, sorted(set(p))) for t, p in needs.items() if t.oid}
    role = str((conn.execute("SELECT current_user").fetchone() or ("?",))[0])
    rows = conn.execute(
        _ACCESS_SQL, (list(wanted), [",".join(privileges) for _, privileges in wanted.values()])
    ).fetchall()
    secured = [(wanted[oid][0].name, force, owner) for oid, active, force, owner, _, _ in rows if active]
    if secured:
        raise row_security_refusal(role, secured, action, tenant_id)
    lacking = [(wanted[oid][0], missing, seqs) for oid, _, _, _, missing, seqs in rows if missing or seqs]
    problems = [f"{'/'.join(missing)} on table {t.name}" for t, missing, _ in lacking if missing]
    problems += [f"UPDATE on sequence {seq}" for _, _, seqs in lacking for seq in seqs]
    grants = [
        f"GRANT {', '.join(missing)} ON {t.ident().as_string(conn)} TO {role}" for t, missing, _ in lacking if missing
    ]
    grants += [f"GRANT UPDATE ON SEQUENCE {seq} TO {role}" for _, _, seqs in lacking for seq in seqs]
    if temp_tables:
        row = conn.execute("SELECT has_database_privilege(current_database(), 'TEMP'), current_database()").fetchone()
        if row is not None and not row[0]:
            problems.append(f"TEMP on database {row[1]} (a restore stages rows in temporary tables)")
            grants.append(f'GRANT TEMP ON DATABASE "{row[1]}" TO {role}')
    if problems:
        raise RoleAccessError(
            f"role {role} cannot {action} tenant {tenant_id}: it lacks {', '.join(problems)}; "
            f"grant them ({'; '.join(grants)}) or connect as a role that has them",
            tenant_id=tenant_id,
            table=lacking[0][0].name if lacking else None,
        )


def row_security_refusal(
    role: str, tables: list[tuple[str, bool, str]], action: str, tenant_id: str | None
) -> RoleAccessError:
    """The refusal for tables (name, FORCE'd, owner) whose row-level security applies to ``role``."""
    named = ", ".join(
        f"{name} (owner {owner}{', FORCE ROW LEVEL SECURITY' if force else ''})" for name, force, owner in tables
    )
    owner_fix = "the tables' owner" + (
        " after ALTER TABLE … NO FORCE ROW LEVEL SECURITY" if any(force for _, force, _ in tables) else ""
    )
    return RoleAccessError(
        f"role {role} cannot {action} tenant {tenant_id}: row-level security of table"
        f"{'s' if len(tables) > 1 else ''} {named} applies to it, so PostgreSQL would hide rows from it "
        f"(a backup would miss them, a restore would leave them behind); connect as a role that bypasses it: "
        f"a role with BYPASSRLS (ALTER ROLE {role} BYPASSRLS, run by a superuser), a superuser, {owner_fix}, "
        f"or {_SUPABASE}",
        tenant_id=tenant_id,
        table=tables[0][0],
    )
