"""How much room a restore needs on the database server, and whether the server has it.

A restore stages the backup's rows in temporary tables (disk of the database's volume; not
bounded by ``temp_file_limit``), may spill a comparison's hash join to temporary files (bounded
by ``temp_file_limit``) when a table's rows do not fit in ``work_mem`` × ``hash_mem_multiplier``,
and writes WAL for the rows it changes. The estimates are upper bounds of the kind an operator
plans with, measured on this project's benchmark (staging is 0.7x the CSV bytes there):

* staging: per table, the larger of the backup's data bytes and 40 bytes per row (a tuple's
  header and line pointer);
* temporary files: three times the largest table's staging when it exceeds the hash memory (a
  hash join writes both sides out in batches, each batch file with its own buffer; a table
  without a key is also sorted), else 0;
* WAL: the written rows' staged bytes, 28 bytes of record per row and 40 per index entry,
  times 1.5 for full-page images.

The free space is known only where this process sees the server's data directory (a server on
this machine): elsewhere (a managed database) the plan says what is needed and the restore goes
on, as ``pg_restore`` would.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import psycopg

from tenant_backup.artifact.manifest import TableManifest
from tenant_backup.errors import RestoreRefusedError
from tenant_backup.results import SpaceNeed, pg_size
from tenant_backup.tenancy.diff import RestoreTable

__all__ = ["check_room", "estimate", "with_writes"]

_TUPLE = 40
_RECORD = 28
_INDEX_ENTRY = 40
_FULL_PAGES = 1.5
_SPILL = 3


def _staged(table: TableManifest) -> int:
    return max(table.size, table.rows * _TUPLE)


def _bytes(conn: psycopg.Connection, setting: str) -> int | None:
    """A size setting in bytes (None: -1, unlimited). Not through pg_settings: that view is a
    function scan whose tuplestore may itself spill under a small work_mem."""
    row = conn.execute("SELECT pg_size_bytes(current_setting(%s))", (setting,)).fetchone()
    return None if row is None or row[0] is None or int(row[0]) < 0 else int(row[0])


def _local_free(conn: psycopg.Connection) -> tuple[int | None, int | None, bool]:
    """Free bytes of the data directory's and of pg_wal's volumes, and whether they are one
    volume, when the server runs on this machine and this role may read data_directory."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT inet_server_addr()::text, current_setting('data_directory')").fetchone()
    except psycopg.Error:
        return None, None, False
    if row is None or row[1] is None:
        return None, None, False
    address, data = row
    if address is not None and not ipaddress.ip_interface(str(address)).ip.is_loopback:
        return None, None, False
    folder = Path(str(data))
    wal = folder / "pg_wal"
    try:
        if not (folder / "PG_VERSION").exists():
            return None, None, False
        data_vfs, wal_vfs = os.statvfs(folder), os.statvfs(wal)
        same = folder.stat().st_dev == wal.stat().st_dev
    except OSError:
        return None, None, False
    return data_vfs.f_bavail * data_vfs.f_frsize, wal_vfs.f_bavail * wal_vfs.f_frsize, same


def estimate(
    conn: psycopg.Connection, work: list[RestoreTable], manifest_tables: dict[str, TableManifest], work_mem: str
) -> SpaceNeed:
    """What staging and comparing ``work`` needs, and what the server has (see the module)."""
    row = conn.execute(
        "SELECT pg_size_bytes(%s) * current_setting('hash_mem_multiplier')::float8", (work_mem,)
    ).fetchone()
    hash_mem = int(row[0]) if row else 0
    staged = {t.name: _staged(manifest_tables[t.name]) for t in work}
    largest = max(staged.values(), default=0)
    data_free, wal_free, same = _local_free(conn)
    return SpaceNeed(
        staging_bytes=sum(staged.values()),
        temp_file_bytes=_SPILL * largest if largest > hash_mem else 0,
        temp_file_limit=_bytes(conn, "temp_file_limit"),
        disk_free=data_free,
        wal_free=wal_free,
        wal_on_data_volume=same,
    )


def with_writes(
    conn: psycopg.Connection,
    need: SpaceNeed,
    work: list[RestoreTable],
    manifest_tables: dict[str, TableManifest],
    written: dict[str, tuple[int, int]],
) -> SpaceNeed:
    """``need`` with the WAL of ``written`` (per table: rows inserted or updated, rows deleted)."""
    indexes: dict[str, int] = dict(
        conn.execute(
            "SELECT c.oid::regclass::text, count(i.indexrelid) FROM pg_class c LEFT JOIN pg_index i "
            "ON i.indrelid = c.oid WHERE c.oid = ANY(%s::regclass[]) GROUP BY 1",
            ([t.target().as_string(conn) for t in work],),
        ).fetchall()
    )
    wal = 0.0
    for t in work:
        rows_written, rows_deleted = written.get(t.name, (0, 0))
        manifest = manifest_tables[t.name]
        per_row = _staged(manifest) / max(manifest.rows, 1) + _RECORD
        per_row += _INDEX_ENTRY * int(indexes.get(t.target().as_string(conn), 0))
        wal += rows_written * per_row + rows_deleted * _RECORD
    return need.model_copy(update={"wal_bytes": int(wal * _FULL_PAGES)})


def check_room(need: SpaceNeed, tenant: str, backup_id: str) -> None:
    """Refuse, before the step that would run out, when the server lacks the room."""
    if need.temp_file_limit is not None and need.temp_file_bytes > need.temp_file_limit:
        raise RestoreRefusedError(
            f"the restore of backup {backup_id} into tenant {tenant} would need about "
            f"{pg_size(need.temp_file_bytes)} of temporary files to compare its largest table, and "
            f"temp_file_limit is {pg_size(need.temp_file_limit)}: raise it (as a superuser: ALTER ROLE … or ALTER "
            "DATABASE … SET temp_file_limit = …), or give the comparison more memory (TENANT_BACKUP_WORK_MEM); "
            "nothing was written",
            tenant_id=tenant,
            backup_id=backup_id,
        )
    if need.disk_free is None:
        return
    data = need.staging_bytes + need.temp_file_bytes + (need.wal_bytes or 0) * need.wal_on_data_volume
    short = [(data, need.disk_free, "the data directory's volume")]
    if not need.wal_on_data_volume and need.wal_free is not None and need.wal_bytes:
        short.append((need.wal_bytes, need.wal_free, "pg_wal's volume"))
    for wanted, free, where in short:
        if wanted > free:
            raise RestoreRefusedError(
                f"the restore of backup {backup_id} into tenant {tenant} needs about {pg_size(wanted)} on "
                f"{where} ({need.describe()}) and it has {pg_size(free)} free: free some space on the database "
                "server, or restore fewer tables at once (--table); nothing was written",
                tenant_id=tenant,
                backup_id=backup_id,
            )
