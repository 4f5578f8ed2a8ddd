"""Per-tenant keys in the ledger (``tenant_keys``, ledger v5): created on a tenant's first backup
with per-tenant keys, kept only wrapped to the operator's recipients, destroyed by erasure. An
erased tenant's row stays, as the record of its erasure, and refuses new backups of that id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from pydantic import BaseModel

from tenant_backup.errors import ConfigurationError
from tenant_backup.ledger import uuid_spelling

__all__ = ["TenantKey", "destroy_key", "get_key", "refuse_erased", "tenant_key"]


class TenantKey(BaseModel):
    tenant_id: str
    recipient: str | None
    wrapped_identity: str | None
    wrapped_to: list[str]
    created_at: datetime
    destroyed_at: datetime | None = None
    destroyed_by: str | None = None


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.tenant_keys").format(sql.Identifier(schema))


def get_key(conn: psycopg.Connection, schema: str, tenant_id: str) -> TenantKey | None:
    """The tenant's key row; a uuid typed in capitals or in braces is the same tenant."""
    query = sql.SQL(
        "SELECT tenant_id, recipient, wrapped_identity, wrapped_to, created_at, destroyed_at, destroyed_by::text "
        "FROM {} WHERE tenant_id = ANY(%s) ORDER BY tenant_id = %s DESC LIMIT 1"
    ).format(_table(schema))
    spellings = sorted({tenant_id, uuid_spelling(tenant_id)})
    with conn.cursor(row_factory=class_row(TenantKey)) as cur:
        return cur.execute(query, (spellings, uuid_spelling(tenant_id))).fetchone()


def refuse_erased(conn: psycopg.Connection, schema: str, tenant_id: str, action: str = "backed up") -> None:
    """An erased tenant is never backed up again, nor restored into, under the same id."""
    key = get_key(conn, schema, tenant_id)
    if key is not None and key.destroyed_at is not None:
        raise ConfigurationError(
            f"tenant {tenant_id} was erased on {key.destroyed_at:%Y-%m-%d %H:%M} UTC (erase-tenant): it is not "
            f"{action} again; delete its rows from the app, or, if the id really is a new tenant, remove the record of "
            f"the erasure: DELETE FROM {schema}.tenant_keys WHERE tenant_id = '{tenant_id}'",
            tenant_id=tenant_id,
        )


def tenant_key(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    operator_recipients: list[str],
    new_key: Callable[[list[str]], tuple[str, str]],
) -> TenantKey:
    """The tenant's live key; on first use ``new_key`` makes it (its recipient, and its identity
    wrapped to ``operator_recipients``). Concurrent first backups agree on one key. The caller
    has refused an erased tenant (:func:`refuse_erased`)."""
    key = get_key(conn, schema, tenant_id)
    if key is not None and key.recipient is not None:
        return key
    recipient, wrapped = new_key(operator_recipients)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (tenant_id, recipient, wrapped_identity, wrapped_to) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tenant_id) DO NOTHING"
        ).format(_table(schema)),
        (tenant_id, recipient, wrapped, operator_recipients),
    )
    key = get_key(conn, schema, tenant_id)
    assert key is not None and key.recipient is not None
    return key


def destroy_key(conn: psycopg.Connection, schema: str, tenant_id: str, destroyed_by: str | None) -> TenantKey | None:
    """Destroy the tenant's key (a record of the erasure stays, with its public key); returns the
    key as it was (None: the tenant had none)."""
    before = get_key(conn, schema, tenant_id)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} AS k (tenant_id, recipient, wrapped_identity, destroyed_at, destroyed_by) "
            "VALUES (%s, NULL, NULL, now(), %s) ON CONFLICT (tenant_id) DO UPDATE SET wrapped_identity = NULL, "
            "destroyed_at = coalesce(k.destroyed_at, now()), "
            "destroyed_by = coalesce(k.destroyed_by, excluded.destroyed_by)"
        ).format(_table(schema)),
        (tenant_id, destroyed_by),
    )
    return before
