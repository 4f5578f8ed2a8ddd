"""Planning an incremental backup: which backup it is taken against, or why it is a full one.

An incremental (``--type incremental``) holds what changed since its *parent*, the tenant's newest
completed backup, and needs nothing from the app to find it (see :mod:`backup.changes`):

* rows written since the parent's snapshot: PostgreSQL stamps every row version with the
  transaction that wrote it (``xmin``), and the parent recorded which transactions its snapshot
  saw; an UPDATE that forgot ``updated_at``, a row re-inserted or written by a restore are new
  row versions all the same;
* rows deleted since, found by comparing the tenant's keys with the parent's, bucket by bucket:
  the parent left a digest of its keys per bucket in the ledger.

Comparing transaction ids is only sound within one line of history of one cluster, so the parent
must come from the same database (system identifier), the same timeline (no point-in-time
recovery since) and a transaction id that is not older than the current one; its schema, profile,
categories and format must be the request's, its chain not older than ``chain_days`` nor longer
than ``chain_links``. Otherwise the backup is a full one that starts a new chain, and says why.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.db import DatabaseOwner
from tenant_backup.ledger import BackupFilter, BackupRow, list_backups
from tenant_backup.ledger.chains import ancestors, digest_buckets
from tenant_backup.tenancy.catalog import TableScope

__all__ = ["ChainPlan", "Parent", "plan_chain", "timeline"]

_MAX_XID_AGE = 1_000_000_000  # far from wraparound: 32-bit row xids still map to one 64-bit id each


class Parent(BaseModel):
    """The backup an incremental holds the changes since."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    base_id: str  # the full backup the chain starts with
    base_at: str  # when the base was taken (ISO 8601): the chain's age
    xids: str  # the parent's snapshot (pg_snapshot text): the transactions it saw


class ChainPlan(BaseModel):
    """A backup that can be the parent of an incremental: the seed of its key hashes, the
    buckets of each keyed table, what its tables are (:func:`table_identity`), and, for an
    incremental, its parent."""

    model_config = ConfigDict(frozen=True)

    seed: int
    buckets: dict[str, int]  # the tables compared by key (the others are copied whole); 0: the base's to choose
    identity: str = ""
    parent: Parent | None = None
    reason: str = ""  # why a requested incremental is a full backup instead


# What a table is, beyond its columns' names and types: the relation, its partitions and
# inheritance children (a table swapped for another, a partition attached, detached or
# replaced), each column's number (one dropped and added again), the labels of its enum types
# (renamed). Each of them changes what rows hold, or which rows are there, without writing a
# row: no xmin would tell.
_IDENTITY = """
SELECT c.oid::text,
  (WITH RECURSIVE below(oid) AS (SELECT c.oid UNION SELECT i.inhrelid FROM pg_inherits i JOIN below b
     ON i.inhparent = b.oid) SELECT string_agg(oid::text, ',' ORDER BY oid) FROM below),
  (SELECT string_agg(a.attname || ':' || a.attnum || ':' || a.atttypid, ',' ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT string_agg(DISTINCT e.oid::text || '=' || e.enumlabel, ',')
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     JOIN pg_enum e ON e.enumtypid IN (t.oid, t.typelem, t.typbasetype)
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c WHERE c.oid = %s::regclass
"""


def table_identity(conn: psycopg.Connection, scopes: list[TableScope]) -> str:
    """A digest of what every backed-up table, and every table its tenant is found through, is."""
    names = sorted(
        {s.ident().as_string(conn) for s in scopes} | {h.parent().as_string(conn) for s in scopes for h in s.path}
    )
    digest = hashlib.sha256()
    for name in names:
        row = conn.execute(_IDENTITY, (name,)).fetchone()
        digest.update(repr((name, row)).encode())
    return digest.hexdigest()


def timeline(conn: psycopg.Connection) -> int | None:
    """The server's timeline (it changes with a point-in-time recovery); None where it cannot be
    read (a standby, a role that may not)."""
    with suppress(psycopg.Error), conn.transaction():
        row = conn.execute("SELECT ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int").fetchone()
        return int(row[0]) if row else None
    return None


def _hashable(conn: psycopg.Connection, scope: TableScope) -> bool:
    """The table's key can be hashed (every key type has a hash function): it can be compared."""
    if not scope.key:
        return False
    # One row of NULLs typed as the key: the hash functions are looked up even for NULLs, and an
    # empty table still answers.
    cols = sql.SQL(", ").join(map(sql.Identifier, scope.key))
    probe = sql.SQL(
        "SELECT hash_record_extended(ROW({}), 0) FROM (SELECT 1) one LEFT JOIN (SELECT {} FROM {} LIMIT 0) k ON true"
    ).format(sql.SQL(", ").join(sql.Identifier("k", c) for c in scope.key), cols, scope.ident())
    try:
        with conn.transaction():
            conn.execute(probe)
        return True
    except psycopg.Error:
        return False


def plan_chain(
    conn: psycopg.Connection,
    schema: str,
    *,
    tenant_id: str,
    scopes: list[TableScope],
    wanted: dict[str, Any],
    database: DatabaseOwner,
    line: int | None,
    chain_days: float,
    chain_links: int,
) -> ChainPlan:
    """The chain an incremental joins (``wanted``: what its parent must match), or a new one."""
    keyed = [s for s in scopes if _hashable(conn, s)]
    identity = table_identity(conn, scopes)
    fresh = ChainPlan(seed=int.from_bytes(os.urandom(7), "big"), buckets={s.table: 0 for s in keyed}, identity=identity)
    newest = list_backups(conn, schema, limit=1, where=BackupFilter(tenant_id=tenant_id, status="completed"))
    if not newest:
        return fresh.model_copy(update={"reason": "the tenant has no backup yet"})
    parent = newest[0]
    refusal = _unfit(conn, schema, parent, {**wanted, "table_identity": identity}, database, line, chain_days)
    if refusal:
        return fresh.model_copy(update={"reason": refusal})
    chain = ancestors(conn, schema, parent.id)
    if len(chain) > chain_links:
        return fresh.model_copy(update={"reason": f"its chain already holds {len(chain) - 1} incrementals"})
    failed = next((r for r in chain if r.verification == "failed"), None)
    if failed is not None:
        return fresh.model_copy(
            update={"reason": f"backup {failed.id} of its chain failed verification: {failed.verification_error}"}
        )
    kept = digest_buckets(conn, schema, parent.id)
    if set(kept) != {s.table for s in keyed}:
        return fresh.model_copy(
            update={
                "reason": f"its newest backup {parent.id} kept no key digests of these tables (only a chain's newest "
                "backup keeps them: was a newer one deleted?)"
            }
        )
    return ChainPlan(
        seed=int(parent.metadata["chain_seed"]),
        buckets=kept,
        identity=identity,
        parent=Parent(backup_id=parent.id, base_id=chain[0].id, base_at=_base_at(parent), xids=parent.metadata["xids"]),
    )


def _unfit(
    conn: psycopg.Connection,
    schema: str,
    parent: BackupRow,
    wanted: dict[str, Any],
    database: DatabaseOwner,
    line: int | None,
    chain_days: float,
) -> str:
    """Why the tenant's newest backup cannot be an incremental's parent ('' when it can)."""
    meta = parent.metadata
    if "chain_seed" not in meta or "xids" not in meta:
        return f"its newest backup {parent.id} is not part of a chain (a full backup taken without --type incremental)"
    for field, value in wanted.items():
        if _norm(meta.get(field, getattr(parent, field, None))) != _norm(value):
            return f"its newest backup {parent.id} differs in {_WHAT.get(field, field.replace('_', ' '))}"
    if parent.owner != database:
        return f"its newest backup {parent.id} is of another database"
    if meta.get("timeline") != line:
        return f"the server's timeline changed since backup {parent.id} (a point-in-time recovery?)"
    row = conn.execute(
        "SELECT now() - %s::timestamptz > make_interval(secs => %s), "
        "pg_snapshot_xmax(pg_current_snapshot())::text::numeric - pg_snapshot_xmax(%s::pg_snapshot)::text::numeric",
        (_base_at(parent), chain_days * 86400, meta["xids"]),
    ).fetchone()
    assert row is not None
    old, ahead = row
    if old:
        return f"its chain's base is older than {chain_days:g} days (TENANT_BACKUP_CHAIN_DAYS)"
    if ahead < 0:
        return f"the server's transaction ids went back since backup {parent.id} (a restored cluster?)"
    if ahead > _MAX_XID_AGE:  # (the oldest row a chain compares is younger than its parent's snapshot)
        return f"more than {_MAX_XID_AGE:,} transactions ran since backup {parent.id}"
    return ""


def _base_at(parent: BackupRow) -> str:
    """When the chain of ``parent`` began (its base's snapshot time, which each link records)."""
    return str(parent.metadata.get("chain_base_at") or parent.created_at.isoformat())


_WHAT = {
    "schema_fingerprint": "schema (the tables' columns, types or keys changed)",
    "table_identity": "tables (one replaced or re-created, a partition attached, detached or swapped, a column "
    "dropped and added again, an enum's labels renamed)",
    "tenant_column": "tenant column",
}


def _norm(value: Any) -> Any:
    return sorted(value) if isinstance(value, list) else value
