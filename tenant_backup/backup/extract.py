"""Extraction: stream one table's tenant rows out of PostgreSQL with COPY into a spool file.

Rows stay bytes end to end: COPY chunks are gathered into ~1 MiB buffers, framed for the
artifact's format, hashed (sha256, and CRC-32 for a ZIP entry) and compressed with the backup's
codec, so the artifact is later assembled by copying compressed parts. Memory is bounded by the
buffer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg
from isal import isal_zlib
from psycopg import ClientCursor, sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.artifact.codecs import Compression, compressor
from tenant_backup.artifact.formats import ArtifactFormat, Framer, copy_statement
from tenant_backup.backup.changes import KeyState
from tenant_backup.backup.copyout import CopyOut
from tenant_backup.errors import ExtractError, RoleAccessError
from tenant_backup.progress import Progress, listening, publish
from tenant_backup.tenancy.catalog import TableScope

__all__ = ["TablePart", "extract_table"]


class TablePart(BaseModel):
    """One extracted table, spooled compressed and framed for the artifact."""

    model_config = ConfigDict(frozen=True)

    table: str
    path: str
    rows: int
    size: int  # bytes of the table's data (the CSV file; the JSON rows; the COPY rows)
    compressed_size: int
    sha256: str  # of those bytes
    crc32: int  # of the uncompressed part, as a ZIP entry needs (0 for JSON and SQL)
    newlines: int | None = None  # in a CSV part: rows + 1 (the header) unless values hold newlines
    changes: bool = False  # only the rows written since the parent backup (an incremental)
    key_state: KeyState | None = None  # the tenant's keys, for a chain of incrementals


def extract_table(
    conn: psycopg.Connection,
    scope: TableScope,
    tenant_id: str,
    dest: Path,
    *,
    fmt: ArtifactFormat = "csv",
    compression: Compression = "deflate",
    level: int = 1,
    only: sql.Composable | None = None,
    params: dict[str, Any] | None = None,
) -> TablePart:
    """COPY the tenant's rows of ``scope`` into ``dest``; ``conn`` must already be inside the
    shared snapshot. ``only`` narrows them (an incremental's changed rows; its ``params``)."""
    digest = hashlib.sha256()
    frame = Framer(fmt, scope)
    zip_entry = fmt == "csv"
    pack = compressor(compression, level, "zip" if zip_entry else "stream")
    crc = 0
    size = 0
    newlines = 0
    # COPY takes no bind parameters: the tenant id is bound client-side, as psycopg's own
    # cursor.copy(query, params) does.
    statement = ClientCursor(conn).mogrify(copy_statement(scope, fmt, only), {**(params or {}), "tenant": tenant_id})
    copy = CopyOut(conn, statement.encode())
    try:
        with dest.open("wb") as out:

            def put(data: bytes | bytearray, *, hashed: bool = True) -> None:
                nonlocal crc, size
                if hashed:
                    digest.update(data)
                    size += len(data)
                if zip_entry:
                    crc = isal_zlib.crc32(data, crc)
                out.write(pack.compress(data))

            put(frame.prefix, hashed=False)
            for block in copy:
                put(frame.data(block))
                lines = block.count(b"\n")
                newlines += lines
                if listening():  # newlines approximate rows (a quoted one counts twice): enough for a bar
                    publish(Progress(tenant_id=tenant_id, table=scope.table, rows=lines, bytes=len(block)))
            put(frame.end())
            put(frame.suffix, hashed=False)
            out.write(pack.flush())
            rows = copy.rows
            compressed = out.tell()
    except psycopg.errors.InsufficientPrivilege as exc:
        # The up-front access check passed, so a policy or a grant changed since: not transient.
        raise RoleAccessError(
            f"COPY of table {scope.table!r} for tenant {tenant_id} was refused: {exc}".strip(),
            tenant_id=tenant_id,
            table=scope.table,
        ) from exc
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
        newlines=newlines if zip_entry else None,
    )
