"""Whom a backup's artifact is encrypted to: the operator's age recipients (``--encrypt-to``, else
``TENANT_BACKUP_RECIPIENTS``), or, with per-tenant keys, the tenant's own key, wrapped to them."""

from __future__ import annotations

import logging

import psycopg

from tenant_backup.artifact.encryption import check_recipients, default_recipients, new_tenant_key
from tenant_backup.errors import ConfigurationError
from tenant_backup.ledger import keys

__all__ = ["artifact_recipients", "operator_recipients"]

log = logging.getLogger("tenant_backup")


def operator_recipients(encrypt_to: list[str] | None) -> list[str]:
    """``encrypt_to``, else the environment's; the environment's are checked either way."""
    recipients = default_recipients()
    return recipients if encrypt_to is None else check_recipients(encrypt_to)


def artifact_recipients(
    conn: psycopg.Connection, schema: str, tenant_id: str, operator: list[str], tenant_key: bool
) -> list[str]:
    """The artifact's recipients; an erased tenant is refused, and a tenant key needs ``operator``."""
    keys.refuse_erased(conn, schema, tenant_id)
    if not tenant_key:
        return operator
    if not operator:
        raise ConfigurationError(
            f"tenant {tenant_id}'s own key is kept wrapped to the operator's age recipients, and none is given: "
            "pass --encrypt-to age1… (or set TENANT_BACKUP_RECIPIENTS) with --tenant-key",
            tenant_id=tenant_id,
        )
    key = keys.tenant_key(conn, schema, tenant_id, operator, new_tenant_key)
    if sorted(key.wrapped_to) != sorted(operator):
        log.warning(
            "the key of tenant %s is wrapped to %s, not to the recipients given (%s): once the old operator key is "
            "retired its backups cannot be read; run tenant-backup rewrap-keys --identity OLD_KEY --encrypt-to NEW",
            tenant_id,
            ", ".join(key.wrapped_to),
            ", ".join(operator),
        )
    assert key.recipient is not None  # a live key
    return [key.recipient]
