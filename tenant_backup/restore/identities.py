"""Which identities read a backup: the ones at hand, and, for a backup encrypted to its tenant's
own key, that key, unwrapped by one of them (see ``tenant_backup.ledger.keys``)."""

from __future__ import annotations

import psycopg

from tenant_backup.artifact.encryption import IdentitySource, with_tenant_key
from tenant_backup.errors import EncryptionKeyError
from tenant_backup.ledger import keys
from tenant_backup.ledger.keys import TenantKey

__all__ = ["reading_identities", "tenant_key_of"]


def tenant_key_of(
    conn: psycopg.Connection, schema: str, tenant_id: str, encrypted_to: list[str] | None, backup_id: str
) -> TenantKey | None:
    """The tenant key a backup is encrypted to (None: it is not); refused once that key is destroyed."""
    if not encrypted_to:
        return None
    key = keys.get_key(conn, schema, tenant_id)
    if key is None or key.recipient not in encrypted_to:
        return None
    if key.wrapped_identity is None:
        raise EncryptionKeyError(
            f"backup {backup_id} is encrypted to the own key of tenant {tenant_id}, destroyed on "
            f"{key.destroyed_at:%Y-%m-%d %H:%M} UTC (erase-tenant): no one can read it any more; finish the "
            f"erasure with tenant-backup erase-tenant {tenant_id} --confirm ERASE",
            backup_id=backup_id,
            tenant_id=tenant_id,
        )
    return key


def reading_identities(identities: IdentitySource, key: TenantKey | None) -> IdentitySource:
    if key is None or key.wrapped_identity is None:
        return identities
    return with_tenant_key(identities, key.wrapped_identity, tenant_id=key.tenant_id, wrapped_to=key.wrapped_to)
