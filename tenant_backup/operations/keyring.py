"""Rotating the operator's key over the per-tenant keys (``tenant-backup rewrap-keys``).

A tenant's own key is kept wrapped to the operator's recipients of the day it was made. When the
operator moves to a new key, every live tenant key is unwrapped with an identity at hand (the
old one) and wrapped again to the new recipients, in one transaction: the tenants' backups never
change (they stay encrypted to the tenant keys), and the old operator key can then be retired.
"""

from __future__ import annotations

from psycopg import sql
from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.artifact.encryption import IdentitySource, unwrap_identity, wrap_identity
from tenant_backup.db import connect
from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import Settings

__all__ = ["RewrapReport", "rewrap_keys"]


class RewrapReport(BaseModel):
    recipients: list[str]
    rewrapped: list[str]  # tenants whose key is now wrapped to ``recipients``
    already: list[str]  # tenants whose key already was


def rewrap_keys(db_url: str, settings: Settings, recipients: list[str], identities: IdentitySource) -> RewrapReport:
    """Wrap every live tenant key to ``recipients``; refused, changing nothing (one transaction), when
    a key that needs it opens with none of the identities at hand."""
    if not recipients:
        raise ConfigurationError(
            "no recipients to wrap the tenant keys to: give the new operator key with --encrypt-to age1… (or set "
            "TENANT_BACKUP_RECIPIENTS)"
        )
    table = sql.Identifier(settings.ledger_schema, "tenant_keys")
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        with conn.transaction():
            rows = conn.execute(
                sql.SQL(
                    "SELECT tenant_id, wrapped_identity, wrapped_to FROM {} WHERE wrapped_identity IS NOT NULL "
                    "ORDER BY tenant_id FOR UPDATE"
                ).format(table)
            ).fetchall()
            todo = [r for r in rows if sorted(r[2]) != sorted(recipients)]
            held = identities() if todo else []
            rewrapped = []
            for tenant_id, wrapped, wrapped_to in todo:
                text = unwrap_identity(
                    wrapped,
                    held,
                    tenant_id=tenant_id,
                    wrapped_to=wrapped_to,
                    then="nothing was changed: give the old operator identity with --identity old.txt",
                )
                conn.execute(
                    sql.SQL("UPDATE {} SET wrapped_identity = %s, wrapped_to = %s WHERE tenant_id = %s").format(table),
                    (wrap_identity(text, recipients), recipients, tenant_id),
                )
                rewrapped.append(tenant_id)
    return RewrapReport(
        recipients=recipients, rewrapped=rewrapped, already=[r[0] for r in rows if r[0] not in rewrapped]
    )
