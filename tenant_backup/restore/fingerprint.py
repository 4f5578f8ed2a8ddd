"""Stage only the rows that differ: a table's backup and its live rows compared as COPY lines.

A restore by delta (restore/delta.py) compares the staged backup with the tenant's rows by key.
Staging every row costs most of a restore of a tenant that changed a little (COPY FROM parses
each row: ~2 s a million rows here). For a keyed table of a CSV backup whose columns are the
table's columns now, in a ``replace``, this module finds the rows that differ first
(restore/sides.py):

1. each row of the artifact is hashed as the bytes COPY wrote it (Python's keyed 64-bit hash of
   the record; records split at newlines outside quotes, restore/records.py), the hashes sorted;
2. the tenant's rows are read with the same ``COPY … (FORMAT csv)`` in the same pinned session
   settings, so a row holding the values the backup holds prints the same line; a row younger
   than the restore's snapshot (``delta.recent``) carries its ``xmin`` in a last field. Other
   sessions read them, in the restore's exported snapshot (restore/readers.py), while this one
   hashes the next table and stages the last;
3. the artifact rows whose line no live row printed are staged (to insert, or to update); the
   live rows whose line the artifact lacks (to update, or delete), and the young ones with their
   ``xmin``, go to a small table (``_live``).

The delta is then built from those rows alone (:func:`classify`), with the same actions and
``xmin`` guard as a full comparison, and the same check before commit holds: every other row of
the tenant was equal, as a line, to a row of the backup in the restore's snapshot, and the check
finds any row another session wrote since. A line that differs only because the table changed
how it prints (a column retyped ``numeric(12,2)`` -> ``numeric(12,3)``) is only staged: the
classify compares the staged row, read into today's types, with the live one as both print now,
and leaves it alone. A false match needs two different lines with equal 64-bit keyed
hashes (about one in 10^13 per changed row of a million-row table); two backed-up rows with
equal hashes send the table to a whole staging.

Anything else is staged whole, as before (:func:`staging.stage`): more than ``MAX_ROWS`` rows
(client memory: ~24 bytes a row at the peak), an artifact of another format or a chain, a restore into
another tenant, ``merge``, a table whose columns changed since the backup, or one of which the
tenant has no rows now (every row is an insert).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import psycopg
from psycopg import sql

from tenant_backup.artifact.reader import Artifact
from tenant_backup.progress import Progress, publish
from tenant_backup.restore.delta import recent
from tenant_backup.restore.readers import SnapshotReaders
from tenant_backup.restore.sides import BackupSide, LiveSide, copy_backup_rows, read_backup, read_live
from tenant_backup.restore.staging import Mode, stage
from tenant_backup.tenancy.diff import ACTION, RestoreTable

__all__ = ["MAX_ROWS", "eligible", "stage_changed", "stage_whole"]

MAX_ROWS = 3_000_000  # a table of more is staged whole: its hashes would cost ~24 bytes a row at the peak
PARALLEL_ROWS = 200_000  # rows of a tenant from which its rows are read in several sessions
_CHUNK = 1 << 20
_XMIN = sql.Identifier("tenant_backup_xmin")
_CHANGED = sql.Identifier("tenant_backup_changed")
_HERE = sql.Identifier("tenant_backup_here")


def eligible(artifact: Artifact, t: RestoreTable, mode: Mode, restored: Collection[str], *, rewrite: bool) -> bool:
    """Whether ``t`` may be staged by its changed rows (see the module's docstring)."""
    entry = artifact.manifest.tables[t.name]
    return (
        t.keyed
        and mode == "replace"
        and not rewrite
        and not artifact.chain
        and artifact.manifest.artifact_format == "csv"
        and 0 < entry.rows <= MAX_ROWS
        and t.backup_columns == [c.name for c in t.scope.copied_columns]
        and all(hop.ref_table in restored for hop in t.scope.path)  # else the check compares keys
    )


def stage_changed(
    conn: psycopg.Connection,
    artifact: Artifact,
    tables: list[RestoreTable],
    tenant: str,
    snap: str,
    readers: SnapshotReaders,
) -> None:
    """Stage by their changed rows those of ``tables`` that can be (marked ``partial``, their delta
    built); the others are left for the caller to stage whole. With parallel ``readers``, one
    thread hashes the backup's tables in turn while the readers read the tenant's rows and this
    session stages what both sides have done, all at once; memory stays bounded (the hashes of
    ``MAX_ROWS`` rows at a time, or of one table)."""
    present = [
        t
        for t in sorted(tables, key=lambda t: -artifact.manifest.tables[t.name].rows)  # the longest reads first
        if conn.execute(sql.SQL("SELECT EXISTS ({})").format(t.current([])), {"tenant": tenant}).fetchone() == (True,)
    ]  # (where the tenant has none of a table's rows, every row is an insert: staged whole)
    if not readers.parallel:
        for t in present:
            if (backup := read_backup(artifact, t)) is not None:
                with backup.spool:
                    _stage(conn, t, backup, readers.submit(read_live, t, tenant, snap, backup), tenant, snap)
        return
    budget = _Budget(MAX_ROWS)

    def prepare(t: RestoreTable) -> tuple[BackupSide, Future[LiveSide]] | None:
        budget.take(artifact.manifest.tables[t.name].rows)
        backup = read_backup(artifact, t)
        return None if backup is None else (backup, readers.submit(read_live, t, tenant, snap, backup))

    with ThreadPoolExecutor(1, thread_name_prefix="tenant-backup-hashing") as hashing:
        jobs = [(t, hashing.submit(prepare, t)) for t in present]
        try:
            for t, job in jobs:
                prepared = job.result()
                try:
                    if prepared is not None:
                        with prepared[0].spool:
                            _stage(conn, t, *prepared, tenant, snap)
                finally:
                    budget.give(artifact.manifest.tables[t.name].rows)
        finally:
            budget.close()  # a failure: let the hashing thread stop
            for _, job in jobs:
                if job.done() and not job.cancelled() and job.exception() is None and (got := job.result()):
                    got[0].spool.close()
                    if got[1].done() and got[1].exception() is None:
                        got[1].result().rows.close()


class _Budget:
    """Rows whose hashes may be held at once; one table is let in whatever its size."""

    def __init__(self, rows: int) -> None:
        self._free = rows
        self._all = rows
        self._closed = False
        self._cond = threading.Condition()

    def take(self, rows: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._free >= min(rows, self._all))
            if self._closed:
                raise RuntimeError("the restore stopped")
            self._free -= rows

    def give(self, rows: int) -> None:
        with self._cond:
            self._free += rows
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _stage(
    conn: psycopg.Connection,
    t: RestoreTable,
    backup: BackupSide,
    reading: Future[LiveSide],
    tenant: str,
    snap: str,
) -> None:
    """Stage the backup's rows that no live row printed, load the live side, classify."""
    live = reading.result()
    with live.rows:
        conn.execute(t.create_stage())
        differ = np.flatnonzero(~live.matched)  # positions among the sorted hashes
        rows = backup.order[differ]
        by_row = np.argsort(rows)
        t.staged_rows = copy_backup_rows(conn, t, backup, rows[by_row], backup.hashes[differ][by_row])
        live_table = t.stage_ident("_live")
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, NULL::xid AS {}, NULL::bool AS {} FROM {} "
                "WITH NO DATA"
            ).format(live_table, t.cols(t.backup_columns), _XMIN, _CHANGED, t.target())
        )
        live.rows.seek(0)
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(live_table)) as copy:
            while data := live.rows.read(_CHUNK):
                copy.write(data)
    conn.execute(sql.SQL("ANALYZE {}; ANALYZE {}").format(t.stage_ident(), live_table))
    classify(conn, t, tenant, snap)
    t.partial = True
    publish(Progress(tenant_id=tenant, table=t.name, rows=len(backup.hashes), bytes=0, done=True))


def stage_whole(conn: psycopg.Connection, artifact: Artifact, t: RestoreTable, tenant: str) -> None:
    """Stage every row of a partly staged table after all (an apply that compares every row)."""
    conn.execute(sql.SQL("DROP TABLE {}, {}, {}").format(t.stage_ident(), t.stage_ident("_live"), t.delta_ident()))
    t.partial = False
    stage(conn, artifact, t, tenant, rewrite=False)


def classify(conn: psycopg.Connection, t: RestoreTable, tenant: str, snap: str) -> None:
    """The delta of a table staged by its changed rows, as :func:`delta.classify` builds it for a
    whole one: ``i`` a staged key the tenant lacked, ``u`` one it held otherwise, ``d`` a live row
    the backup lacks, ``k`` a young row equal to the backup's; each with the ``xmin`` of the row
    compared. An old row keeps the ``xmin`` it has now only if that is still old: one rewritten
    since the comparison gets none, so the apply leaves it alone and the check names it. (The row
    of a key is joined by key alone: the apply's guard checks that it is still the tenant's.)"""
    keys = sql.SQL(", ").join(
        sql.SQL("coalesce({}, {}) AS {}").format(sql.Identifier("s", c), sql.Identifier("l", c), sql.Identifier(c))
        for c in t.pk
    )
    x_match = sql.SQL(" AND ").join(
        sql.SQL("{} = coalesce({}, {})").format(sql.Identifier("x", c), sql.Identifier("s", c), sql.Identifier("l", c))
        for c in t.pk
    )
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {delta} ON COMMIT DROP AS SELECT {keys}, CASE WHEN l.{here} IS NULL THEN 'i' "
            "WHEN s.{here} IS NULL THEN CASE WHEN l.{changed} THEN 'd' ELSE 'k' END "
            "WHEN {cmp_s} IS DISTINCT FROM {cmp_l} THEN 'u' ELSE 'k' END::\"char\" AS {action}, "
            "CASE WHEN l.{xmin} IS NOT NULL THEN l.{xmin} WHEN NOT ({old_young}) THEN x.xmin END AS {xmin} "
            "FROM (SELECT *, true AS {here} FROM {stage}) s FULL JOIN (SELECT *, true AS {here} FROM {live}) l "
            "ON {match} LEFT JOIN {target} x ON {x_match}"
        ).format(
            delta=t.delta_ident(),
            keys=keys,
            here=_HERE,
            changed=_CHANGED,
            action=ACTION,
            xmin=_XMIN,
            old_young=recent(sql.Identifier("x", "xmin")),
            stage=t.stage_ident(),
            live=t.stage_ident("_live"),
            match=t.key_match("s", "l"),
            cmp_s=t.comparable("s"),
            cmp_l=t.comparable("l"),
            target=t.target(),
            x_match=x_match,
        ),
        {"tenant": tenant, "snap": snap},
    )
    conn.execute(sql.SQL("ANALYZE {}").format(t.delta_ident()))
