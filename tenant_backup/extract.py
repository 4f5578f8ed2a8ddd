"""Extraction: stream one table's tenant rows out of PostgreSQL with COPY into a spool file.

Rows stay bytes end to end: COPY chunks are gathered into ~1 MiB buffers, then hashed (sha256 of
the CSV), checksummed (CRC-32, for the ZIP entry) and compressed with ISA-L's raw deflate, so
the ZIP writer can later store them without compressing again. Memory is bounded by the buffer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
from isal import isal_zlib
from psycopg import ClientCursor
from pydantic import BaseModel, ConfigDict

from tenant_backup.catalog import TableScope
from tenant_backup.copyout import CopyOut
from tenant_backup.errors import ExtractError
from tenant_backup.progress import Progress, listening, publish
from tenant_backup.sqlbuild import copy_out

__all__ = ["TablePart", "extract_table"]


class TablePart(BaseModel):
    """One extracted table, spooled as raw deflate data."""

    model_config = ConfigDict(frozen=True)

    table: str
    path: str
    rows: int
    size: int  # bytes of CSV
    compressed_size: int
    sha256: str  # of the CSV
    crc32: int


def extract_table(
    conn: psycopg.Connection, scope: TableScope, tenant_id: str, dest: Path, *, level: int = 1
) -> TablePart:
    """COPY the tenant's rows of ``scope`` as CSV into ``dest`` (raw deflate); ``conn`` must
    already be inside the shared snapshot."""
    digest = hashlib.sha256()
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)  # raw deflate, as ZIP wants
    crc = 0
    size = 0
    # COPY takes no bind parameters: the tenant id is bound client-side, as psycopg's own
    # cursor.copy(query, params) does.
    statement = ClientCursor(conn).mogrify(copy_out(scope), {"tenant": tenant_id}).encode()
    copy = CopyOut(conn, statement)
    try:
        with dest.open("wb") as out:
            for block in copy:
                digest.update(block)
                crc = isal_zlib.crc32(block, crc)
                size += len(block)
                out.write(compressor.compress(block))
                if listening():  # newlines approximate rows (a quoted one counts twice): enough for a bar
                    publish(Progress(tenant_id=tenant_id, table=scope.table, rows=block.count(b"\n"), bytes=len(block)))
            out.write(compressor.flush())
            rows = copy.rows
            compressed = out.tell()
    except psycopg.Error as exc:
        raise ExtractError(
            f"COPY of table {scope.table!r} for tenant {tenant_id} failed: {exc}".strip(),
            tenant_id=tenant_id,
            table=scope.table,
        ) from exc
    publish(Progress(tenant_id=tenant_id, table=scope.table, rows=0, bytes=0, done=True))
    return TablePart(
        table=scope.table,
        path=str(dest),
        rows=rows,
        size=size,
        compressed_size=compressed,
        sha256=digest.hexdigest(),
        crc32=crc,
    )
