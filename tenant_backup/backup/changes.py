"""What an incremental backup reads of a table: the rows written since its parent's snapshot, and
its tenant's keys, by bucket, against the parent's (pure SQL builders and one reading step).

**Written since.** A row version's ``xmin`` is the transaction that wrote it; the parent recorded
its snapshot (``pg_current_snapshot()``), and every transaction older than the snapshot's oldest
running one had ended before it, so a row written since has an ``xmin`` at least that one. For a
table whose tenant is found through foreign keys (``lignes_vente -> ventes``), a row also counts
as changed when a row along its path was written since: a row can move into the tenant without
being written itself, when its parent does.

**Deleted since.** Each key is hashed (``hash_record_extended``, seeded per chain); its low bits
pick a bucket, and per bucket the backup keeps the count and the XOR of its hashes. A bucket whose
digest differs from the parent's lost or gained keys: the incremental holds the hashes of every
key of such a bucket now, and a restore deletes the rows of the bucket whose hash is not among
them. A bucket with the parent's digest holds the parent's keys. The restore checks the rebuilt
table against the count and XOR of all its keys, which the manifest records.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.tenancy.catalog import TableScope
from tenant_backup.tenancy.filters import tenant_filter

__all__ = ["KeyState", "changed_filter", "key_hash", "read_keys", "xid_params"]

DIGEST = struct.Struct(">iq")  # a bucket's digest: its count and XOR, 12 bytes, as the ledger stores them

# A row version written by a transaction not older than the oldest one running at the parent's
# snapshot. (pg_visible_in_snapshot() cannot be asked: it misjudges a subtransaction's id, and a
# savepoint's rows would be missed.) The few rows of transactions between that one and the
# snapshot that the parent did see come again; a restore writes them as they are.
_NEW = sql.SQL("age(xmin) <= age(%(chain_xmin)s::xid)")


class KeyState(BaseModel):
    """A table's keys at the snapshot: how many, their digest, and where the files went."""

    model_config = ConfigDict(frozen=True)

    rows: int  # the tenant's rows of the table at the snapshot
    digest: str  # "<count>:<xor of the key hashes, hex>": what a rebuilt table must match
    buckets: int
    digests_path: str  # the per-bucket digests (the ledger keeps them for the next incremental)
    keys_path: str | None = None  # an incremental's changed buckets and their key hashes (CSV)
    keys_size: int = 0
    keys_sha256: str | None = None
    changed_buckets: int = 0


def xid_params(parent_xids: str) -> dict[str, Any]:
    """The parameters of :func:`changed_filter`: the parent snapshot's oldest running transaction,
    as the 32-bit id a row's ``xmin`` is compared with."""
    xmin = int(parent_xids.split(":", 1)[0])
    return {"chain_xmin": str(xmin & 0xFFFFFFFF)}


def changed_filter(scope: TableScope) -> sql.Composable:
    """The rows of ``scope`` written since the parent, or whose path to the tenant was: each hop
    wraps the condition of the table nearer the tenant column (every subquery reads one table, so
    ``xmin`` is that table's)."""
    condition: sql.Composable = _NEW
    for hop in reversed(scope.path):
        condition = sql.SQL("({} OR ({}) IN (SELECT {} FROM {} WHERE {}))").format(
            _NEW,
            sql.SQL(", ").join(map(sql.Identifier, hop.columns)),
            sql.SQL(", ").join(map(sql.Identifier, hop.ref_columns)),
            hop.parent(),
            condition,
        )
    return condition


def key_hash(columns: list[str] | tuple[str, ...], alias: str | None = None) -> sql.Composed:
    """A key's 64-bit hash, seeded by the chain (``%(chain_seed)s``)."""
    cols = sql.SQL(", ").join(sql.Identifier(alias, c) if alias else sql.Identifier(c) for c in columns)
    return sql.SQL("hash_record_extended(ROW({}), %(chain_seed)s::bigint)").format(cols)


def read_keys(
    conn: psycopg.Connection,
    scope: TableScope,
    tenant_id: str,
    *,
    seed: int,
    buckets: int,
    parent_digests: bytes | None,
    dest: Path,
) -> KeyState:
    """Digest the tenant's keys of ``scope`` by bucket (``dest`` + ``.digests``); against a parent's
    digests, also write the changed buckets and the hashes of their keys now (``dest`` + ``.keys``)."""
    mask = buckets - 1
    compare = parent_digests is not None
    query = sql.SQL(
        "WITH k AS MATERIALIZED (SELECT {h} AS h FROM {t} WHERE {f}), "
        "a AS MATERIALIZED (SELECT (h & %(mask)s)::int AS b, count(*)::int AS n, bit_xor(h) AS x FROM k GROUP BY 1) "
        "SELECT b, n, x, false FROM a"
        + (
            " UNION ALL SELECT (h & %(mask)s)::int, 0, h, true FROM k WHERE (h & %(mask)s)::int IN "
            "(SELECT b FROM a WHERE int4send(n) || int8send(x) <> substring(%(parent)s::bytea FROM b * 12 + 1 FOR 12))"
            if compare
            else ""
        )
    ).format(h=key_hash(scope.key), t=scope.ident(), f=tenant_filter(scope))
    params = {"tenant": tenant_id, "chain_seed": seed, "mask": mask, "parent": parent_digests}
    with conn.cursor(binary=True) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    now = bytearray(DIGEST.size * buckets)  # empty buckets: count 0, XOR 0
    kept: list[tuple[int, int]] = []
    total = xor = 0
    for b, n, x, is_key in rows:
        if is_key:
            kept.append((b, x))
        else:
            DIGEST.pack_into(now, b * DIGEST.size, n, x)
            total += n
            xor ^= x
    digests_path = dest.with_name(dest.name + ".digests")
    digests_path.write_bytes(now)
    state = KeyState(
        rows=total, digest=f"{total}:{xor & 0xFFFFFFFFFFFFFFFF:016x}", buckets=buckets, digests_path=str(digests_path)
    )
    if parent_digests is None:
        return state
    emptied = {  # buckets whose keys were all deleted: no row of theirs is left to list
        b for b, (n, _) in enumerate(DIGEST.iter_unpack(parent_digests)) if n and not DIGEST.unpack_from(now, b * 12)[0]
    }
    changed = {b for b, _ in kept} | emptied
    keys_path = dest.with_name(dest.name + ".keys")
    by_bucket: dict[int, list[int]] = {}
    for b, h in kept:
        by_bucket.setdefault(b, []).append(h)
    with keys_path.open("w", encoding="ascii", newline="\n") as out:
        out.write("bucket,key_hash\n")
        for b in sorted(changed):
            out.write(f"{b},\n")
            out.writelines(f"{b},{h}\n" for h in sorted(by_bucket.get(b, ())))
    data = keys_path.read_bytes()
    return state.model_copy(
        update={
            "keys_path": str(keys_path),
            "keys_size": len(data),
            "keys_sha256": hashlib.sha256(data).hexdigest(),
            "changed_buckets": len(changed),
        }
    )
