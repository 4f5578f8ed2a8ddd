"""What an app needs to show its own backups through PostgREST / supabase-js (``migrate --app-policies``).

Seed 000 asks that "users can view own establishment backups" and "admins can manage backups";
seed 001 keeps the schedules to admins. The ledger itself stays unexposed (its schema is not in
the API, its tables have no grants for the app's role, and the tool's own roles keep reading it
whole); the app gets three views in its API schema (``public`` by default), owned by the role
that runs the migration, each filtered by the profile's rule for the user of the request:

- ``tenant_backups``: the backups of the tenants the user belongs to (no storage path, checksum,
  error text or metadata: where the bucket is, and what failed how, is the operator's business);
- ``tenant_backup_logs``: the backup / restore log of those tenants (its results, not its errors);
- ``tenant_backup_schedules``: the schedules of the tenants the user is an *admin* of, and only
  theirs can be inserted, changed or deleted (``WITH CHECK OPTION``), only valid ones (seed 000's
  rules, the profile's categories), only their settings (not the runs' bookkeeping): a non-admin
  sees none and creates none.

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
# What the app may write of a schedule; the bookkeeping (runs, timestamps, the id) stays the tool's.
_WRITABLE = (
    "tenant_id", "nom", "actif", "frequence", "heure_execution", "jour_semaine", "jour_mois", "type", "categories",
    "format", "retention_jours",
)  # fmt: skip


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
    # A deactivated user (the rule's active_column not true) is no member, and no admin.
    active = (
        sql.SQL(" AND u.{} IS TRUE").format(sql.Identifier(rule.active_column)) if rule.active_column else sql.SQL("")
    )
    member = sql.SQL("SELECT u.{tenant}::text FROM {users} u WHERE u.{user}::text = {me}{active}").format(
        tenant=sql.Identifier(rule.tenant_column),
        users=users,
        user=sql.Identifier(rule.user_column),
        me=user_id,
        active=active,
    )
    admin = sql.SQL("{member} AND u.{role}::text = ANY ({roles})").format(
        member=member, role=sql.Identifier(rule.role_column), roles=sql.Literal(list(rule.roles))
    )

    def view(
        name: str, columns: str, table: str, tenants: sql.Composable, check: sql.Composable | None
    ) -> sql.Composed:
        return sql.SQL(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} WITH (security_barrier = true) AS SELECT {columns} "
            "FROM {table} WHERE tenant_id IN ({tenants}){valid}{check}"
        ).format(
            view=sql.Identifier(app_schema, name),
            columns=sql.SQL(columns),
            table=sql.Identifier(ledger_schema, table),
            tenants=tenants,
            valid=sql.SQL(" AND ({})").format(check) if check is not None else sql.SQL(""),
            check=sql.SQL(" WITH CASCADED CHECK OPTION" if check is not None else ""),
        )

    # What seed 000's backupScheduleSchema accepts, and the profile's categories: checked on every
    # write through the view (a row the app cannot write, it does not see either).
    valid_schedule = sql.SQL(
        "length(nom) BETWEEN 2 AND 100 AND retention_jours BETWEEN 1 AND 365 "
        "AND type IN ('full', 'partial', 'incremental') AND (jour_semaine IS NULL OR jour_semaine BETWEEN 0 AND 6) "
        "AND (jour_mois IS NULL OR jour_mois BETWEEN 1 "
        "AND 31) AND (frequence <> 'weekly' OR jour_semaine IS NOT NULL) AND (frequence <> 'monthly' OR jour_mois "
        "IS NOT NULL) AND jsonb_typeof(categories) = 'array' AND NOT EXISTS (SELECT 1 FROM "
        "jsonb_array_elements_text(categories) c WHERE c <> ALL ({categories}))"
    ).format(categories=sql.Literal(sorted(profile.categories)))

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
            "created_by, created_at, started_at, completed_at, schedule_id, encrypted_to IS NOT NULL AS encrypted, "
            "verified_at, verification",
            "backups",
            member,
            None,
        ),
        view(
            "tenant_backup_logs",
            "id, backup_id, tenant_id, performed_by, action, result, created_at",
            "backup_restore_logs",
            member,
            None,
        ),
        view(
            "tenant_backup_schedules",
            "id, tenant_id, nom, actif, frequence, heure_execution, jour_semaine, jour_mois, type, categories, "
            "format, retention_jours, derniere_execution, prochaine_execution, created_at, updated_at",
            "backup_schedules",
            admin,
            valid_schedule,
        ),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}.app_user_id() TO {}").format(ledger, role),
        sql.SQL("REVOKE ALL ON {}, {}, {} FROM PUBLIC").format(*(sql.Identifier(app_schema, v) for v in APP_VIEWS)),
        sql.SQL("GRANT SELECT ON {}, {} TO {}").format(
            sql.Identifier(app_schema, "tenant_backups"), sql.Identifier(app_schema, "tenant_backup_logs"), role
        ),
        sql.SQL("GRANT SELECT, DELETE, INSERT ({columns}), UPDATE ({columns}) ON {view} TO {role}").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, _WRITABLE)),
            view=sql.Identifier(app_schema, "tenant_backup_schedules"),
            role=role,
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
