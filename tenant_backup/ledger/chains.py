"""Chains of incremental backups in the ledger: a backup's ancestors (``parent_id``), its
dependents, and the key digests a backup leaves for the next incremental to compare with.

A chain is a full backup (its *base*) and the incrementals that follow it, each holding the
changes since its parent. Only the newest completed backup of a tenant keeps its digests: an
incremental is always taken against the newest backup, and a chain's restore needs none.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.errors import LedgerError
from tenant_backup.ledger import BackupRow, _q, _select

__all__ = ["ancestors", "dependents", "digest_buckets", "read_digest", "refuse_moved_on", "store_digests"]


def ancestors(conn: psycopg.Connection, schema: str, backup_id: str) -> list[BackupRow]:
    """The chain that ends at ``backup_id``: its base first, ``backup_id``'s own row last."""
    rows = _select(
        conn,
        schema,
        sql.SQL(
            "id IN (WITH RECURSIVE up(id, parent_id) AS (SELECT id, parent_id FROM {t} WHERE id = %s "
            "UNION ALL SELECT b.id, b.parent_id FROM {t} b JOIN up ON b.id = up.parent_id) SELECT id FROM up)"
        ).format(t=_q(schema, "backups")),
        (backup_id,),
        limit=None,
    )
    by_id = {r.id: r for r in rows}
    chain: list[BackupRow] = []
    current: str | None = backup_id
    while current is not None:
        row = by_id.get(current)
        if row is None:
            raise LedgerError(
                f"backup {chain[-1].id if chain else backup_id} needs its parent backup {current}, which the ledger "
                "no longer has: the chain is broken and cannot be restored; restore a full backup",
                backup_id=backup_id,
            )
        chain.append(row)
        current = row.parent_id
    return list(reversed(chain))


def dependents(conn: psycopg.Connection, schema: str, backup_id: str) -> list[str]:
    """The backups whose parent ``backup_id`` is."""
    rows = conn.execute(
        sql.SQL("SELECT id::text FROM {} WHERE parent_id = %s ORDER BY created_at").format(_q(schema, "backups")),
        (backup_id,),
    ).fetchall()
    return [row[0] for row in rows]


def store_digests(
    conn: psycopg.Connection, schema: str, backup_id: str, tenant_id: str, digests: dict[str, tuple[int, bytes]]
) -> None:
    """Record a completed backup's key digests (per table: buckets, digests) and drop those of the
    tenant's older backups (no incremental will be taken against them)."""
    table = _q(schema, "backup_key_digests")
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE backup_id IN (SELECT id FROM {} WHERE tenant_id = %s AND id <> %s)").format(
            table, _q(schema, "backups")
        ),
        (tenant_id, backup_id),
    )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} (backup_id, table_name, buckets, digests) VALUES (%s, %s, %s, %s)").format(table),
            [(backup_id, name, buckets, data) for name, (buckets, data) in digests.items()],
        )


def digest_buckets(conn: psycopg.Connection, schema: str, backup_id: str) -> dict[str, int]:
    """The tables a backup kept key digests of, and their bucket counts (empty: none)."""
    rows = conn.execute(
        sql.SQL("SELECT table_name, buckets FROM {} WHERE backup_id = %s").format(_q(schema, "backup_key_digests")),
        (backup_id,),
    ).fetchall()
    return {name: int(buckets) for name, buckets in rows}


def read_digest(conn: psycopg.Connection, schema: str, backup_id: str, table: str) -> bytes | None:
    """A backup's key digests of one table, bucket by bucket (None: it kept none)."""
    row = conn.execute(
        sql.SQL("SELECT digests FROM {} WHERE backup_id = %s AND table_name = %s").format(
            _q(schema, "backup_key_digests")
        ),
        (backup_id, table),
    ).fetchone()
    return bytes(row[0]) if row else None


def refuse_moved_on(conn: psycopg.Connection, schema: str, tenant_id: str, parent_id: str) -> None:
    """Under the tenant lock: the parent an incremental was planned against must still be the
    tenant's newest completed backup, with its digests (another backup may have completed between
    the plan and the lock, and taken them)."""
    row = conn.execute(
        sql.SQL(
            "SELECT b.id::text, EXISTS (SELECT 1 FROM {} d WHERE d.backup_id = %s) FROM {} b "
            "WHERE b.tenant_id = %s AND b.status = 'completed' ORDER BY b.created_at DESC, b.id LIMIT 1"
        ).format(_q(schema, "backup_key_digests"), _q(schema, "backups")),
        (parent_id, tenant_id),
    ).fetchone()
    if row is None or row[0] != parent_id or not row[1]:
        raise LedgerError(
            f"backup {row[0] if row else '(none)'} of tenant {tenant_id} completed after this incremental was planned "
            f"against backup {parent_id}: nothing was written; run the incremental again",
            backup_id=parent_id,
        )
