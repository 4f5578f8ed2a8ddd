"""The two sides of a comparison by lines (restore/fingerprint.py): the backup's rows of a table
and the tenant's rows now, each row as the line COPY prints, hashed.

The backup's side is read from the artifact once (inflated, its sha256 checked as it is read)
and spooled, inflated, next to it: the rows to stage are then taken from the spool, and so is a
second reading when the table's values turn out to hold newlines. The live side is one ``COPY …
TO STDOUT (FORMAT csv)`` of the tenant's rows, in a session that sees the restore's snapshot.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import IO, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import ClientCursor, sql

from tenant_backup.artifact.reader import Artifact
from tenant_backup.backup.copyout import CopyOut
from tenant_backup.restore.delta import recent
from tenant_backup.restore.records import Records
from tenant_backup.tenancy.diff import RestoreTable
from tenant_backup.tenancy.filters import tenant_filter

__all__ = ["BackupSide", "LiveSide", "copy_backup_rows", "read_backup", "read_live"]

_CHUNK = 1 << 20
_EDGES = 1 << 16

Hashes = npt.NDArray[np.int64]


class BackupSide(NamedTuple):
    """A table's rows in the artifact: their hashes sorted, and each one's row number."""

    hashes: Hashes
    order: npt.NDArray[np.int32]
    quoted: bool  # its values hold newlines: records are split at those outside quotes
    spool: IO[bytes]  # the table's CSV, inflated (the caller closes it)
    lengths: npt.NDArray[np.uint32]  # of each row in the spool, in file order, its newline included
    start: int  # where the first row starts in the spool (after the BOM and the header row)
    buckets: npt.NDArray[np.int32]  # where each bucket of hashes (their top ``bits`` bits) starts
    bits: int

    def find(self, hashes: Hashes) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Which of ``hashes`` the backup holds, and where (in :attr:`hashes`): a bucket holds a
        row or two, so each lookup reads one or two entries (a binary search over millions of
        hashes misses the cache at each of its ~20 steps)."""
        bucket = (hashes >> (64 - self.bits)) + (1 << (self.bits - 1))
        at = self.buckets[bucket].astype(np.int64)
        end = self.buckets[bucket + 1]
        found = np.zeros(len(hashes), np.bool_)
        where = at.copy()
        last = len(self.hashes) - 1
        step = 0
        while True:
            probe = at + step
            inside = probe < end
            if not inside.any():
                return found, where
            hit = inside & (self.hashes[np.minimum(probe, last)] == hashes)
            found |= hit
            where[hit] = probe[hit]
            step += 1


class LiveSide(NamedTuple):
    matched: npt.NDArray[np.bool_]  # which of the backup's sorted hashes a live row printed
    rows: IO[bytes]  # CSV for the table's ``_live``: the live rows that differ, and the young ones


def read_backup(artifact: Artifact, t: RestoreTable) -> BackupSide | None:
    """Hash each of the artifact's rows of ``t``, spooling the CSV; None where its records are not
    its rows (two alike, a file not ending with a complete record)."""
    entry = artifact.manifest.tables[t.name]
    # A backup says how many newlines its CSV holds; of an older one, try lines first.
    quoted = entry.newlines is not None and entry.newlines != entry.rows + 1
    spool = tempfile.TemporaryFile(dir=artifact.path.parent)  # noqa: SIM115 - handed to the caller
    try:
        with artifact.open_table(t.name) as fh:
            read = _hashes(_teed(fh, spool), quoted, entry.rows)
        if read is not None and read.records != entry.rows and not quoted and entry.newlines is None:
            quoted = True  # values hold newlines: split at those outside quotes
            read = _hashes(_spooled(spool), quoted, entry.rows)
        if read is None or read.records != entry.rows:
            spool.close()
            return None
        hashes, lengths, start = read.hashes, read.lengths, read.start
        # (not a stable sort: two equal hashes send the table away below; the default sort is SIMD,
        # 0.06 s for 1.35 M hashes against 0.28 s)
        order = np.argsort(hashes).astype(np.int32)  # (fingerprint.MAX_ROWS rows at most)
        hashes = hashes[order]
        if len(hashes) > 1 and bool(np.any(hashes[1:] == hashes[:-1])):
            spool.close()
            return None  # two rows print alike (or their hashes collide): compare them in SQL
    except BaseException:
        spool.close()
        raise
    bits = int(min(23, max(4, np.ceil(np.log2(max(len(hashes), 2))) - 1)))  # ~2 hashes a bucket
    buckets = np.empty((1 << bits) + 1, np.int32)
    buckets[-1] = len(hashes)
    for at in range(0, 1 << bits, _EDGES):  # a slice at a time: 2 M buckets' edges would take 32 MB more
        edges = (np.arange(at, min(at + _EDGES, 1 << bits), dtype=np.int64) - (1 << (bits - 1))) << (64 - bits)
        buckets[at : at + len(edges)] = np.searchsorted(hashes, edges)
    return BackupSide(hashes, order, quoted, spool, lengths, start, buckets, bits)


def read_live(conn: psycopg.Connection, t: RestoreTable, tenant: str, snap: str, backup: BackupSide) -> LiveSide:
    """COPY the tenant's rows of ``t`` as the backup printed them, each young one with its
    ``xmin`` in a last field (else that field is empty: the backup's line and ``,``); spool (CSV
    for ``_live``) the rows whose line the backup lacks, and the young ones; and say which of the
    backup's rows some live row printed. Each COPY message is one row, newlines in its values
    included: the live side needs no splitting."""
    select = sql.SQL("SELECT {}, CASE WHEN {} THEN xmin END FROM {} WHERE {}").format(
        t.cols(t.backup_columns), recent(sql.Identifier("xmin")), t.target(), tenant_filter(t.scope, t.tenant)
    )
    statement = ClientCursor(conn).mogrify(
        sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(select), {"tenant": tenant, "snap": snap}
    )
    matched = np.zeros(len(backup.hashes), np.bool_)
    out = tempfile.SpooledTemporaryFile(max_size=4 << 20)  # noqa: SIM115 - handed to the caller
    try:
        for block, rows in CopyOut(conn, statement.encode()).counted():
            if not backup.quoted:
                lines = bytes(block).split(b"\n")
                lines.pop()
            if backup.quoted or len(lines) != rows:  # values hold newlines: split at those outside quotes
                lines = Records(quoted=True).feed(block)  # (a block holds whole rows)
                assert len(lines) == rows, f"COPY of {t.name}: {rows} rows split into {len(lines)} records"
            found, at = backup.find(np.fromiter(map(hash, lines), np.int64, len(lines)))
            matched[at[found]] = True
            for i in np.flatnonzero(~found).tolist():
                line = lines[i]
                if line.endswith(b","):  # an old row the backup lacks
                    out.write(line + b",t\n")
                    continue
                cut = line.rindex(b",") + 1  # a young row: without its xmin, is it the backup's?
                body = line[:cut]
                same, where = backup.find(np.array([hash(body)], np.int64))
                if same[0]:
                    matched[where[0]] = True
                out.write(line + (b",f\n" if same[0] else b",t\n"))
    except BaseException:
        out.close()
        raise
    return LiveSide(matched, out)


def copy_backup_rows(
    conn: psycopg.Connection, t: RestoreTable, backup: BackupSide, wanted: npt.NDArray[np.int32], expect: Hashes
) -> int:
    """COPY the backup's rows of ``t`` numbered ``wanted`` (sorted, from 0; ``expect``: their
    hashes) into its staging table, each read from the spool where it lies."""
    if not len(wanted):
        return 0
    ends = np.cumsum(backup.lengths, dtype=np.int64)[wanted] + backup.start
    sizes = backup.lengths[wanted].astype(np.int64)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(t.stage_ident(), t.cols(t.backup_columns))
    backup.spool.flush()  # read below the file object, from its descriptor
    fd = backup.spool.fileno()
    with conn.cursor() as cur, cur.copy(copy_in) as copy:
        for at in range(0, len(wanted), 4096):
            rows = [
                os.pread(fd, size, end - size)
                for end, size in zip(ends[at : at + 4096].tolist(), sizes[at : at + 4096].tolist(), strict=True)
            ]
            got = np.fromiter((hash(row[:-1] + b",") for row in rows), np.int64, len(rows))
            assert (got == expect[at : at + 4096]).all(), f"table {t.name}: a row read back from the spool differs"
            copy.write(b"".join(rows))
    return len(wanted)


def _teed(source: IO[bytes], spool: IO[bytes]) -> Iterator[bytes]:
    while data := source.read(_CHUNK):
        spool.write(data)
        yield data


def _spooled(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while data := spool.read(_CHUNK):
        yield data


class _NotRecords(Exception):
    """The table's CSV does not end with a complete record."""


def _records(chunks: Iterator[bytes], quoted: bool) -> Iterator[list[bytes]]:
    """A table's CSV, a chunk of records at a time, each marked as the live side prints it
    (``…,``: the empty last field of an old row; as long as the record with its newline); the
    first is the header row (after the BOM)."""
    records = Records(quoted=quoted, mark=True)
    for data in chunks:
        yield records.feed(data)
    if records.pending:
        raise _NotRecords()


class _Read(NamedTuple):
    hashes: Hashes  # of each row, in file order (valid when ``records`` is the rows expected)
    lengths: npt.NDArray[np.uint32]
    start: int  # where the first row starts (after the BOM and the header row)
    records: int  # the records read


def _hashes(chunks: Iterator[bytes], quoted: bool, rows: int) -> _Read | None:
    """The hash and the length of each of the ``rows`` rows, in file order, written into arrays
    of that size (no list of blocks to join: half the memory at the peak); None when the CSV does
    not end with a complete record. The chunks are read to the end whatever the records' count."""
    hashes = np.empty(rows, np.int64)
    lengths = np.empty(rows, np.uint32)
    start = -1
    count = 0
    try:
        for got in _records(chunks, quoted):
            if start < 0 and got:
                start, got = len(got[0]), got[1:]  # the BOM and the header row
            end = count + len(got)
            if end <= rows:
                hashes[count:end] = np.fromiter(map(hash, got), np.int64, len(got))
                lengths[count:end] = np.fromiter(map(len, got), np.uint32, len(got))
            count = end
    except _NotRecords:
        return None
    if start < 0:
        return None
    return _Read(hashes, lengths, start, count)
