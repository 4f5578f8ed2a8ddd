"""Who may back up or restore a tenant: the profile's admin rule (seed 000: SUPER_ADMIN / ADMIN)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.errors import ConfigurationError, PermissionDeniedError
from tenant_backup.tenancy.catalog import qualified, split_name
from tenant_backup.tenancy.profiles import Profile

__all__ = ["check_admin"]


def check_admin(conn: psycopg.Connection, profile: Profile, tenant_id: str, requested_by: str, action: str) -> None:
    """Raise PermissionDeniedError unless ``requested_by`` is an admin of ``tenant_id``.

    A profile without an admin rule lets everyone through: the caller holds the database
    credentials, which say more than any app role.
    """
    rule = profile.admin
    if rule is None:
        return
    active = sql.Identifier(rule.active_column) if rule.active_column else sql.SQL("true")
    query = sql.SQL("SELECT {}::text, {} IS TRUE FROM {} WHERE {} = %s AND {} = %s").format(
        sql.Identifier(rule.role_column),
        active,
        qualified(*split_name(rule.table, profile.db_schema)),
        sql.Identifier(rule.user_column),
        sql.Identifier(rule.tenant_column),
    )
    try:
        row = conn.execute(query, (requested_by, tenant_id)).fetchone()
    except psycopg.errors.InvalidTextRepresentation as exc:
        raise PermissionDeniedError(
            f"requested_by {requested_by!r} is not a valid user id", tenant_id=tenant_id
        ) from exc
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as exc:
        raise ConfigurationError(
            f"profile {profile.name}'s [admin] rule names what table {rule.table} does not have "
            f"({exc.diag.message_primary}): fix table, user_column, tenant_column, role_column or active_column "
            "in the profile",
            tenant_id=tenant_id,
        ) from exc
    if row is not None and row[0] in rule.roles and not row[1]:
        raise PermissionDeniedError(
            f"user {requested_by} has role {row[0]!r} in tenant {tenant_id} but is deactivated ({rule.table}."
            f"{rule.active_column} is not true): a deactivated user may not {action} this tenant; ask an active admin",
            tenant_id=tenant_id,
        )
    if row is None or row[0] not in rule.roles:
        what = "is not a user of" if row is None else f"has role {row[0]!r} in"
        raise PermissionDeniedError(
            f"user {requested_by} {what} tenant {tenant_id}; only {' / '.join(rule.roles)} users may {action} "
            "this tenant: ask an admin to run it, or run it as the operator without requested_by",
            tenant_id=tenant_id,
        )
