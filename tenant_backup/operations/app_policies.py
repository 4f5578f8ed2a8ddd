"""What an app needs to show its own backups through PostgREST / supabase-js (``migrate --app-policies``).

Seed 000 asks that "users can view own establishment backups" and "admins can manage backups";
seed 001 keeps the schedules to admins. The ledger itself stays unexposed (its schema is not in
the API, its tables have no grants for the app's role, and the tool's own roles keep reading it
whole); the app gets three views in its API schema (``public`` by default), owned by the role
that runs the migration, each filtered by the profile's rule for the user of the request:

- ``tenant_backups``: the backups of the tenants the user belongs to (no storage path, checksum or
  metadata: where the bucket is is the operator's business);
- ``tenant_backup_logs``: the backup / restore log of those tenants;
- ``tenant_backup_schedules``: the schedules of the tenants the user is an *admin* of, and only
  theirs can be inserted, changed or deleted (``WITH CHECK OPTION``): a non-admin sees none and
  creates none.

The user is ``tenant_backup.app_user_id()``: the ``sub`` claim of the request's JWT, read as
Supabase's ``auth.uid()`` reads it (``request.jwt.claims``, or the older ``request.jwt.claim.sub``),
so it works on Supabase and on plain PostgreSQL behind PostgREST alike, and can be tested with
``SET request.jwt.claims``. The views are ``security_barrier``: a user's own functions in a query
never see rows of other tenants.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError
from tenant_backup.tenancy.catalog import qualified, split_name
from tenant_backup.tenancy.profiles import Profile

__all__ = ["APP_VIEWS", "app_policy_statements", "apply_app_policies"]

APP_VIEWS = ("tenant_backups", "tenant_backup_logs", "tenant_backup_schedules")


def app_policy_statements(profile: Profile, ledger_schema: str, app_schema: str, app_role: str) -> list[sql.Composed]:
    """The statements, in order, idempotent (``CREATE OR REPLACE``), for ``profile``'s admin rule."""
    rule = profile.admin
    if rule is None:
        raise ConfigurationError(
            f"profile {profile.name} has no admin rule (which table says who belongs to which tenant, and who is "
            "an admin): add an [admin] section (table, user_column, tenant_column, role_column, roles) to use "
            "--app-policies"
        )
    ledger = sql.Identifier(ledger_schema)
    users = qualified(*split_name(rule.table, profile.db_schema))
    user_id = sql.SQL("{}.app_user_id()").format(ledger)
    member = sql.SQL("SELECT u.{tenant}::text FROM {users} u WHERE u.{user}::text = {me}").format(
        tenant=sql.Identifier(rule.tenant_column), users=users, user=sql.Identifier(rule.user_column), me=user_id
    )
    admin = sql.SQL("{member} AND u.{role}::text = ANY ({roles})").format(
        member=member, role=sql.Identifier(rule.role_column), roles=sql.Literal(list(rule.roles))
    )

    def view(name: str, columns: str, table: str, tenants: sql.Composable, check: bool) -> sql.Composed:
        return sql.SQL(
            "CREATE OR REPLACE VIEW {view} WITH (security_barrier = true) AS SELECT {columns} FROM {table} "
            "WHERE tenant_id IN ({tenants}){check}"
        ).format(
            view=sql.Identifier(app_schema, name),
            columns=sql.SQL(columns),
            table=sql.Identifier(ledger_schema, table),
            tenants=tenants,
            check=sql.SQL(" WITH CASCADED CHECK OPTION" if check else ""),
        )

    role = sql.Identifier(app_role)
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}.app_user_id() RETURNS text LANGUAGE sql STABLE AS $$ SELECT coalesce("
            "nullif(current_setting('request.jwt.claim.sub', true), ''), "
            "nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub') $$"
        ).format(ledger),
        view(
            "tenant_backups",
            "id, tenant_id, nom, type, format, status, backup_type, categories, file_size, record_count, "
            "error_message, created_by, created_at, started_at, completed_at, schedule_id, "
            "encrypted_to IS NOT NULL AS encrypted",
            "backups",
            member,
            False,
        ),
        view(
            "tenant_backup_logs",
            "id, backup_id, tenant_id, performed_by, action, result, error_message, created_at",
            "backup_restore_logs",
            member,
            False,
        ),
        view(
            "tenant_backup_schedules",
            "id, tenant_id, nom, actif, frequence, heure_execution, jour_semaine, jour_mois, type, categories, "
            "format, retention_jours, derniere_execution, prochaine_execution, created_at, updated_at",
            "backup_schedules",
            admin,
            True,
        ),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}.app_user_id() TO {}").format(ledger, role),
        sql.SQL("REVOKE ALL ON {}, {}, {} FROM PUBLIC").format(*(sql.Identifier(app_schema, v) for v in APP_VIEWS)),
        sql.SQL("GRANT SELECT ON {}, {} TO {}").format(
            sql.Identifier(app_schema, "tenant_backups"), sql.Identifier(app_schema, "tenant_backup_logs"), role
        ),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            sql.Identifier(app_schema, "tenant_backup_schedules"), role
        ),
    ]


def apply_app_policies(
    conn: psycopg.Connection, profile: Profile, ledger_schema: str, app_schema: str, app_role: str
) -> list[str]:
    """Create (or replace) the views in one transaction; returns their qualified names."""
    exists = conn.execute(
        "SELECT to_regrole(%s) IS NOT NULL, to_regnamespace(%s) IS NOT NULL", (app_role, app_schema)
    ).fetchone()
    if not exists or not exists[0]:
        raise ConfigurationError(
            f"role {app_role} does not exist: it is the role the app's API requests run as (Supabase: "
            "authenticated); create it, or name yours with --app-role"
        )
    if not exists[1]:
        raise ConfigurationError(f"schema {app_schema} does not exist; name the API's schema with --app-schema")
    statements = app_policy_statements(profile, ledger_schema, app_schema, app_role)
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
    return [f"{app_schema}.{name}" for name in APP_VIEWS]
