"""A restore that pays for what changed: classify once, write the changes, check the changes.

Where only the restore's own statements write in its transaction (``session_replication_role =
replica`` and no ``ENABLE ALWAYS`` trigger on a restored table), a keyed table is compared with
its staged rows in one pass: a full join by key puts the keys to insert (``i``), update (``u``)
and delete (``d``) in a small temporary table (the *delta*), and the apply's statements join
only that. The check before commit then needs no second comparison of every row:

* the tenant's rows are as many as the backup's (``replace``; at least as many with ``merge``);
* every inserted or updated row equals its staged row;
* every other row of the tenant is a row version the comparison saw.

The last holds for a row whose ``xmin`` (the transaction that wrote it) is older than the oldest
transaction running at the snapshot taken before the comparison: it was committed, so compared.
A younger row version is one the comparison recorded (``k``: kept, with its ``xmin``), or one
this transaction wrote; any other was written by another session while the restore ran. (Asking
``pg_visible_in_snapshot()`` would not do: it takes a savepoint's subtransaction id, which no
snapshot lists, for committed, and would miss a writer that began before the restore.)

Together with the comparison itself (every row outside the delta equal to its staged row, in
this transaction) that is the same proof as comparing every row again: the rows outside the
delta were equal, nothing of this transaction wrote them, and nobody else did. Anywhere else
(triggers fire, a table without a key) the restore compares every row (:mod:`restore.apply`).
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg
from psycopg import sql

from tenant_backup.artifact.manifest import TableManifest
from tenant_backup.restore.staging import Mode, TableChange, count_rows, table_changes
from tenant_backup.tenancy.catalog import ForeignKey
from tenant_backup.tenancy.diff import ACTION, RestoreTable
from tenant_backup.tenancy.filters import tenant_filter

__all__ = [
    "always_triggers",
    "apply_delta",
    "classify",
    "count_delta",
    "counts",
    "recent",
    "references_to_deleted",
    "settled",
    "snapshot",
    "writes",
    "written_rows",
    "wrong_rows",
]

_HERE = sql.Identifier("tenant_backup_here")

_XMIN_NAME = "tenant_backup_xmin"
_XMIN = sql.Identifier(_XMIN_NAME)
# A row version younger than the oldest transaction running at the snapshot (%(snap)s).
# Compared as age() would (modulo 2**32, the special ids 0-2 always old), with operators that a
# parallel scan may run (age() is parallel-restricted): the check's counts scan every table.
_RECENT = sql.SQL(
    "({c}::text::bigint > 2 AND (({c}::text::bigint - (pg_snapshot_xmin(%(snap)s::pg_snapshot)::text::bigint "
    "& 4294967295)) & 4294967295) < 2147483648)"
)


def recent(column: sql.Composable) -> sql.Composed:
    """``column`` (an ``xmin``) is younger than the oldest transaction running at ``%(snap)s``."""
    return _RECENT.format(c=column)


def always_triggers(conn: psycopg.Connection, work: list[RestoreTable]) -> list[str]:
    """Restored tables with a user trigger or a rule that acts in replica mode too (``ENABLE ALWAYS``)."""
    rows = conn.execute(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'A' "
        "AND tgrelid = ANY(%(tables)s::regclass[]) UNION SELECT ev_class::regclass::text FROM pg_rewrite "
        "WHERE ev_enabled = 'A' AND rulename <> '_RETURN' AND ev_class = ANY(%(tables)s::regclass[])",
        {"tables": [t.target().as_string(conn) for t in work]},
    ).fetchall()
    return [str(r[0]) for r in rows]


def snapshot(conn: psycopg.Connection) -> str:
    """The snapshot before the comparison: a row written by a transaction it does not see was
    written by another session while the restore ran."""
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return str(row[0])


def classify(conn: psycopg.Connection, t: RestoreTable, tenant: str, mode: Mode, snap: str | None = None) -> None:
    """One full join of the staged rows with the tenant's rows, by key: the keys whose row is
    missing, different, or (``replace``) not in the backup go into the delta table, each with the
    ``xmin`` of the row compared; with the ``snap`` taken before, so do the rows written since its
    oldest running transaction (``k``: kept), which the check before commit looks for
    (:func:`settled`). ``merge`` keeps the tenant's rows the backup lacks: only young ones go in."""
    replace = mode == "replace"
    keys = sql.SQL(", ").join(
        sql.SQL("coalesce({}, {}) AS {}").format(sql.Identifier("s", c), sql.Identifier("c", c), sql.Identifier(c))
        for c in t.pk
    )
    young = sql.SQL(" OR {}").format(recent(sql.Identifier("c", _XMIN_NAME))) if snap else sql.SQL("")
    wanted = (
        "s.{here} IS NULL OR c.{here} IS NULL OR {cmp_c} IS DISTINCT FROM {cmp_s}{recent}"
        if replace
        else "c.{here} IS NULL OR (s.{here} AND {cmp_c} IS DISTINCT FROM {cmp_s}){recent}"
    )
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {delta} ON COMMIT DROP AS SELECT {keys}, CASE WHEN c.{here} IS NULL THEN 'i' "
            "WHEN s.{here} IS NULL THEN {gone} WHEN {cmp_c} IS DISTINCT FROM {cmp_s} THEN 'u' ELSE 'k' END::\"char\" "
            "AS {action}, c.{xmin} "
            "FROM (SELECT *, true AS {here} FROM {stage}) s {join} "
            "(SELECT {cols}, r.xmin AS {xmin}, true AS {here} FROM ({current}) r) c ON {match} "
            "WHERE " + wanted
        ).format(
            delta=t.delta_ident(),
            keys=keys,
            here=_HERE,
            gone=sql.Literal("d" if replace else "k"),
            action=ACTION,
            xmin=_XMIN,
            stage=t.stage_ident(),
            join=sql.SQL("FULL JOIN" if replace or snap else "LEFT JOIN"),
            cols=t.cols(t.common, "r"),
            current=t.current([*t.common, "xmin"]),
            match=t.key_match("s", "c"),
            cmp_c=t.comparable("c"),
            cmp_s=t.comparable("s"),
            recent=young,
        ),
        {"tenant": tenant, "snap": snap},
    )
    conn.execute(sql.SQL("ANALYZE {}").format(t.delta_ident()))


def _staged_changes(t: RestoreTable, columns: list[str]) -> dict[str, sql.Composable]:
    """The parts of a statement writing ``columns`` of the staged rows that the delta names."""
    return {
        "target": t.target(),
        "cols": t.cols(columns),
        "vals": t.cols(columns, "s"),
        "stage": t.stage_ident(),
        "delta": t.delta_ident(),
        "match_d": t.key_match("d", "s"),
        "action": ACTION,
        "match_x": t.key_match("x", "s"),
        "still": _still(t),
    }


def _still(t: RestoreTable) -> sql.Composed:
    """The target row ``x`` is still the one the comparison saw: the tenant's, and the same row
    version. (READ COMMITTED re-checks this on the version another session committed while the
    statement waited for its lock: such a row is left alone, and the check before commit names it.)"""
    return sql.SQL("{} AND x.xmin = d.{}").format(tenant_filter(t.scope, t.tenant, alias="x"), _XMIN)


def apply_delta(conn: psycopg.Connection, work: list[RestoreTable], tenant: str, mode: Mode) -> dict[str, TableChange]:
    """Insert, update and delete the delta's keys (parents first for inserts, children first for
    deletes); a key held by another tenant's row is not inserted (the check names it)."""
    inserted: dict[str, int] = {}
    updated: dict[str, int] = {}
    deleted: dict[str, int] = {t.name: 0 for t in work}
    for t in work:
        inserted[t.name] = conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {vals} FROM {stage} s JOIN {delta} d "
                "ON {match_d} WHERE d.{action} = 'i' AND NOT EXISTS (SELECT 1 FROM {target} x WHERE {match_x})"
            ).format(**_staged_changes(t, t.common))
        ).rowcount
    for t in work:
        non_key = [c for c in t.common if c not in t.pk]
        updated[t.name] = (
            conn.execute(
                sql.SQL(
                    "UPDATE {target} x SET ({cols}) = ROW({vals}) FROM {stage} s JOIN {delta} d ON {match_d} "
                    "WHERE d.{action} = 'u' AND {match_x} AND {still}"
                ).format(**_staged_changes(t, non_key)),
                {"tenant": tenant},
            ).rowcount
            if non_key
            else 0
        )
    if mode == "replace":
        for t in reversed(work):
            deleted[t.name] = conn.execute(
                sql.SQL("DELETE FROM {target} x USING {delta} d WHERE d.{action} = 'd' AND {match} AND {still}").format(
                    target=t.target(),
                    delta=t.delta_ident(),
                    action=ACTION,
                    match=t.key_match("x", "d"),
                    still=_still(t),
                ),
                {"tenant": tenant},
            ).rowcount
    return table_changes(work, inserted, updated, deleted)


def writes(
    conn: psycopg.Connection,
    by_delta: list[RestoreTable],
    work: list[RestoreTable],
    manifest_tables: dict[str, TableManifest],
) -> dict[str, tuple[int, int]]:
    """Per table, the rows an apply will write and delete: the delta's, where classified; else
    (compared by the apply itself) at most every row of the backup."""
    out = {t.name: (manifest_tables[t.name].rows, 0) for t in work}
    for t in by_delta:
        out[t.name] = counts(conn, t)
    return out


def count_delta(conn: psycopg.Connection, t: RestoreTable, rows: int) -> tuple[TableChange, int]:
    """A plan's counts from the delta, and how many of its inserts have a key another tenant's
    row holds (the plan refuses those: staging.refuse_taken_keys)."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE d.{action} = 'i' AND EXISTS (SELECT 1 FROM {target} x WHERE {match})), "
            "count(*) FILTER (WHERE d.{action} = 'i'), count(*) FILTER (WHERE d.{action} = 'u'), "
            "count(*) FILTER (WHERE d.{action} = 'd') FROM {delta} d"
        ).format(action=ACTION, target=t.target(), match=t.key_match("x", "d"), delta=t.delta_ident())
    ).fetchone()
    taken, inserted, updated, deleted = (int(v) for v in row) if row else (0, 0, 0, 0)
    change = TableChange(
        table=t.name, rows=rows, inserted=inserted, updated=updated, deleted=deleted, matched_by=t.matched_by
    )
    return change, taken


def wrong_rows(conn: psycopg.Connection, t: RestoreTable, tenant: str) -> int:
    """Inserted or updated keys whose row is not the tenant's or differs from its staged row.

    By the values' ``=``: the apply wrote these rows from the staged ones, datum for datum; a write
    it skipped (its guard: another session's row) left a row younger than the snapshot, which
    :func:`settled` counts as theirs, however it prints."""
    return count_rows(
        conn,
        sql.SQL(
            "SELECT count(*) FROM {stage} s JOIN {delta} d ON {match_d} WHERE d.{action} IN ('i', 'u') AND NOT EXISTS "
            "(SELECT 1 FROM ({current}) c WHERE {match_c} AND {same})"
        ).format(
            stage=t.stage_ident(),
            delta=t.delta_ident(),
            match_d=t.key_match("d", "s"),
            action=ACTION,
            current=t.current(t.common),
            match_c=t.key_match("c", "s"),
            same=t.same_values("c", "s"),
        ),
        tenant,
    )


class Settled(NamedTuple):
    """A table restored by its delta, after the apply: what the check before commit counts."""

    have: int  # the tenant's rows now
    missing: int  # keys of the backup the tenant no longer has
    extra: int  # the tenant's keys the backup lacks
    theirs: int  # the tenant's rows another session wrote since the snapshot


def settled(conn: psycopg.Connection, t: RestoreTable, tenant: str, snap: str, *, by_key: bool) -> Settled:
    """Count the tenant's rows younger than the oldest transaction running at ``snap`` that
    neither this transaction wrote nor the comparison recorded with the same ``xmin``; with
    ``by_key``, also compare the tenant's keys with the backup's (one join, keys only).

    Without ``by_key`` (``missing`` and ``extra`` 0) the count stands for the keys: every row that
    enters or leaves the tenant is written, or rides on a row along its path that is (a restored
    table, whose check sees that one). It does not where rows may go while others come back
    (``merge`` keeps extra rows) or where a table on the path is not restored: ``by_key`` then.

    The young-row test first: a row older than the snapshot's oldest running transaction
    (nearly every row; frozen ones too) is not looked at further. Without ``by_key``, one
    parallel scan counts the rows and the young ones not this transaction's; only when there
    are any is the delta (a temporary table: no parallel scan) joined to tell its kept rows."""
    theirs = (
        "count(*) FILTER (WHERE c.{here} AND {recent} AND c.xmin <> pg_current_xact_id()::xid AND k.{here} IS NULL)"
    )
    if not by_key:  # first without the delta (a temporary table): a parallel scan, and nearly always enough
        ours = conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()
        assert ours is not None
        first = conn.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE {} AND xmin <> %(ours)s::xid) FROM ({}) c").format(
                recent(sql.Identifier("xmin")), t.current(["xmin"])
            ),
            {"tenant": tenant, "snap": snap, "ours": ours[0]},
        ).fetchone()
        assert first is not None
        if not first[1]:  # no row younger than the snapshot that this transaction did not write
            return Settled(int(first[0]), 0, 0, 0)
    if by_key:
        counted = (
            "SELECT count(c.{here}), count(*) FILTER (WHERE c.{here} IS NULL), "
            f"count(*) FILTER (WHERE s.{{here}} IS NULL), {theirs} "
            "FROM (SELECT {keys}, true AS {here} FROM {stage}) s "
            "FULL JOIN (SELECT {keys}, xmin, true AS {here} FROM ({current}) r) c ON {match} "
        )
    else:
        counted = (
            f"SELECT count(*), 0, 0, {theirs} FROM (SELECT {{keys}}, xmin, true AS {{here}} FROM ({{current}}) r) c "
        )
    row = conn.execute(
        sql.SQL(
            counted + "LEFT JOIN (SELECT {keys}, {xmin}, true AS {here} FROM {delta} WHERE {action} = 'k') k "
            "ON {match_k} AND k.{xmin} = c.xmin"
        ).format(
            here=_HERE,
            recent=recent(sql.Identifier("c", "xmin")),
            keys=t.cols(list(t.pk)),
            stage=t.stage_ident(),
            current=t.current([*t.pk, "xmin"]),
            match=t.key_match("s", "c"),
            xmin=_XMIN,
            delta=t.delta_ident(),
            action=ACTION,
            match_k=t.key_match("k", "c"),
        ),
        {"tenant": tenant, "snap": snap},
    ).fetchone()
    return Settled(*(int(v) for v in row)) if row else Settled(0, 0, 0, 0)


def counts(conn: psycopg.Connection, t: RestoreTable) -> tuple[int, int]:
    """The delta's rows to write (insert or update) and to delete."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE {action} IN ('i', 'u')), count(*) FILTER (WHERE {action} = 'd') FROM {delta}"
        ).format(action=ACTION, delta=t.delta_ident())
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def written_rows(t: RestoreTable, columns: list[str]) -> sql.Composed:
    """``(SELECT <columns> …)`` of the rows of ``t`` that the apply inserted or updated (the
    tenant's: it wrote them so), read by key from the delta."""
    return sql.SQL("(SELECT {cols} FROM {target} x JOIN {delta} d ON {match} WHERE d.{action} IN ('i', 'u'))").format(
        cols=t.cols(columns, "x"), target=t.target(), delta=t.delta_ident(), match=t.key_match("d", "x"), action=ACTION
    )


def references_to_deleted(fk: ForeignKey, child: RestoreTable, parent: RestoreTable) -> sql.Composed | None:
    """``SELECT count(*)`` of the tenant's rows of ``child`` whose ``fk`` names a key that the apply
    deleted from ``parent``; None where ``fk`` references other columns than ``parent``'s key."""
    if sorted(fk.ref_columns) != sorted(parent.pk):
        return None
    column_of = dict(zip(fk.ref_columns, fk.columns, strict=True))
    return sql.SQL(
        "SELECT count(*) FROM ({current}) c WHERE ({cols}) IN (SELECT {keys} FROM {delta} WHERE {action} = 'd')"
    ).format(
        current=child.current(sorted(set(fk.columns))),
        cols=sql.SQL(", ").join(sql.Identifier("c", column_of[k]) for k in parent.pk),
        keys=parent.cols(list(parent.pk)),
        delta=parent.delta_ident(),
        action=ACTION,
    )
