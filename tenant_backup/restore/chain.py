"""Staging a chain of backups: a full one, then each incremental's changes, folded into the
table's staging table inside the restore's transaction, streamed with COPY (never in memory).

For each incremental after the last link that holds all of a table's rows (the base, or an
incremental that copied a table without a key whole):

1. its changed rows go to a temporary table, and its changed key buckets to another;
2. the staged rows of a changed bucket whose key hash the bucket no longer holds are deleted
   (rows deleted since the parent);
3. the staged rows whose key the changes hold are replaced by the changed rows.

The rebuilt table is then checked against the last link's count and digest of its keys: a chain
that does not rebuild the state it recorded (a damaged link, a key type changed since) is refused
before anything is compared with the tenant's rows. See :mod:`backup.changes` for how the backup
found the changes.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.artifact.reader import Artifact
from tenant_backup.backup.changes import key_hash
from tenant_backup.errors import VerificationError
from tenant_backup.tenancy.diff import RestoreTable

__all__ = ["copy_rows", "stage_chain"]

_CHUNK = 1 << 20


def copy_rows(conn: psycopg.Connection, artifact: Artifact, t: RestoreTable, into: sql.Composable) -> None:
    """COPY the artifact's rows of ``t`` into the table ``into``."""
    options = sql.SQL("FORMAT csv, HEADER true" if artifact.copy_format == "csv" else "FORMAT text")
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(into, t.cols(t.backup_columns), options)
    with artifact.open_table(t.name) as source, conn.cursor() as cur, cur.copy(copy_in) as copy:
        while data := source.read(_CHUNK):
            copy.write(data)


def stage_chain(conn: psycopg.Connection, artifact: Artifact, t: RestoreTable) -> None:
    """Rebuild ``t``'s rows at the last link's snapshot in its staging table (created empty)."""
    links = [*artifact.chain, artifact]
    start = max(i for i, link in enumerate(links) if link.manifest.tables[t.name].content == "rows")
    stage = t.stage_ident()
    copy_rows(conn, links[start], t, stage)
    last = artifact.manifest.tables[t.name]
    for i, link in enumerate(links[start + 1 :], start + 1):
        entry = link.manifest.tables[t.name]
        seed, columns = link.manifest.chain_seed, entry.key_columns
        assert seed is not None and columns and entry.buckets, f"link {link.manifest.backup_id} of {t.name}"
        changes, keys = t.stage_ident(f"_changes{i}"), t.stage_ident(f"_keys{i}")
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA").format(changes, stage)
        )
        copy_rows(conn, link, t, changes)
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (bucket int, key_hash bigint) ON COMMIT DROP").format(keys))
        keys_in = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(keys)
        with link.open_keys(t.name) as source, conn.cursor() as cur, cur.copy(keys_in) as copy:
            while data := source.read(_CHUNK):
                copy.write(data)
        conn.execute(sql.SQL("ANALYZE {}; ANALYZE {}").format(changes, keys))
        h = key_hash(columns, "s", sql.Literal(seed))
        conn.execute(
            sql.SQL(
                "DELETE FROM {stage} s WHERE ({h} & {mask})::int IN (SELECT bucket FROM {keys} WHERE key_hash IS NULL) "
                "AND NOT EXISTS (SELECT 1 FROM {keys} k WHERE k.key_hash = {h})"
            ).format(stage=stage, h=h, mask=sql.Literal(entry.buckets - 1), keys=keys)
        )
        match = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("s", c), sql.Identifier("c", c)) for c in columns
        )
        conn.execute(sql.SQL("DELETE FROM {} s USING {} c WHERE {}").format(stage, changes, match))
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage, changes))
        conn.execute(sql.SQL("DROP TABLE {}, {}").format(changes, keys))
    if start == len(links) - 1 or last.key_digest is None:
        return  # the last link holds the table whole: its sha256 and row count were checked
    assert last.key_columns is not None and artifact.manifest.chain_seed is not None
    row = conn.execute(
        sql.SQL("SELECT count(*), coalesce(bit_xor({}), 0) FROM {} s").format(
            key_hash(last.key_columns, "s", sql.Literal(artifact.manifest.chain_seed)), stage
        )
    ).fetchone()
    assert row is not None
    rebuilt = f"{int(row[0])}:{int(row[1]) & 0xFFFFFFFFFFFFFFFF:016x}"
    if rebuilt != last.key_digest:
        raise VerificationError(
            f"table {t.name}: the chain of backup {artifact.manifest.backup_id} (base {links[0].manifest.backup_id}, "
            f"{len(links) - 1} incremental(s)) rebuilds {rebuilt.split(':')[0]} row(s) whose keys do not match the "
            f"{last.total} it recorded: a link is damaged, or the key's type changed since the backup; nothing was "
            "written; restore a full backup",
            backup_id=artifact.manifest.backup_id,
            table=t.name,
        )
