"""A restore's apply, on the staged rows: insert, update, delete (the statements of
:mod:`tenancy.diff`, by key or as a multiset of rows), move sequences, then check the result
before commit and say why when it differs.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenant_backup.artifact.manifest import TableManifest
from tenant_backup.errors import RestoreCheckError
from tenant_backup.restore import delta
from tenant_backup.restore.staging import TAKEN, Mode, TableChange, count_rows, table_changes
from tenant_backup.tenancy.catalog import Catalog
from tenant_backup.tenancy.diff import ACTION, RestoreTable, dangling, delete_surplus, insert_missing, update_changed
from tenant_backup.tenancy.fk_order import RestoreOrder

__all__ = ["apply_changes", "check_restored", "move_sequences"]


def apply_changes(
    conn: psycopg.Connection, work: list[RestoreTable], order: RestoreOrder, tenant: str, mode: Mode, *, broken: bool
) -> dict[str, TableChange]:
    """Insert (parents first), set broken keys, update, then delete (children first).

    Returns what each statement did. Rows of a table with a broken foreign key go in with that
    key NULL; their keys are remembered in a temporary table and set once every table's rows are
    in, so the update that follows only counts rows that really changed. (A table without a key
    cannot be updated afterwards: the engine refuses that case before anything is written.)
    """
    nulled: dict[str, set[str]] = {t.name: set() for t in work}
    if broken:
        for fk in order.broken:
            nulled[fk.table].update(fk.columns)
    inserted: dict[str, int] = {}
    for t in work:
        insert = insert_missing(t, nulled[t.name])
        if nulled[t.name]:
            new = t.stage_ident("_new")
            conn.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                    new, t.cols(t.pk), t.stage_ident()
                )
            )
            insert = sql.SQL("WITH ins AS ({} RETURNING {}) INSERT INTO {} SELECT * FROM ins").format(
                insert, t.cols(t.pk), new
            )
        inserted[t.name] = conn.execute(insert, {"tenant": tenant}).rowcount
    for t in work:
        if nulled[t.name]:
            cols = sorted(nulled[t.name])
            conn.execute(
                sql.SQL("UPDATE {} x SET ({}) = ROW({}) FROM {} s, {} n WHERE {} AND {}").format(
                    t.target(),
                    t.cols(cols),
                    t.cols(cols, "s"),
                    t.stage_ident(),
                    t.stage_ident("_new"),
                    t.key_match("x", "s"),
                    t.key_match("n", "s"),
                )
            )
    updated: dict[str, int] = {}
    for t in work:
        update = update_changed(t)
        updated[t.name] = conn.execute(update, {"tenant": tenant}).rowcount if update is not None else 0
    deleted: dict[str, int] = {t.name: 0 for t in work}
    if mode == "replace":
        for t in reversed(work):
            deleted[t.name] = conn.execute(delete_surplus(t), {"tenant": tenant}).rowcount
    return table_changes(work, inserted, updated, deleted)


def move_sequences(conn: psycopg.Connection, work: list[RestoreTable]) -> None:
    """Move identity and serial sequences past the restored ids (never backwards)."""
    for t in work:
        for column in t.common:
            row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (t.target().as_string(conn), column)).fetchone()
            if not row or row[0] is None:
                continue
            conn.execute(
                sql.SQL(
                    "SELECT setval(%(seq)s::regclass, m) FROM (SELECT max({col}) AS m FROM {target}) x "
                    "WHERE m IS NOT NULL AND m > coalesce(pg_sequence_last_value(%(seq)s::regclass), 0)"
                ).format(col=sql.Identifier(column), target=t.target()),
                {"seq": row[0]},
            )


def check_restored(
    conn: psycopg.Connection,
    catalog: Catalog,
    work: list[RestoreTable],
    tenant: str,
    mode: Mode,
    manifest_tables: dict[str, TableManifest],
    *,
    fk_check: bool,
    by_delta: tuple[list[RestoreTable], str] = ([], ""),
) -> None:
    """Before commit: the tenant's rows equal the backup's (replace) or contain them (merge);
    in replica mode, no foreign key of a restored row points at a missing row.

    Equal multisets: as many rows as the manifest says, and no staged row missing from the
    tenant's rows (``EXCEPT ALL``); the staged rows are the artifact's, whose sha256 was checked.
    The tables restored ``by_delta`` (with the snapshot taken before their comparison) are
    checked on their changed rows only, and for writes of other sessions (see restore/delta.py).
    """
    fast, snap = by_delta
    restored = {w.name for w in work}
    for t in work:
        expected = manifest_tables[t.name].rows
        why = ""
        if t in fast:
            wrong = delta.wrong_rows(conn, t, tenant)
            by_key = mode == "merge" or any(hop.ref_table not in restored for hop in t.scope.path)
            now = delta.settled(conn, t, tenant, snap, by_key=by_key)
            have, missing = now.have, wrong + now.missing + now.theirs + (now.extra if mode == "replace" else 0)
            why = _why_settled(t, now, mode) if not wrong or now.theirs else ""
        else:  # one statement, one snapshot: a delete and an insert between two would cancel out
            both = conn.execute(
                sql.SQL("SELECT ({}), ({})").format(t.count_missing(), t.count_current()), {"tenant": tenant}
            ).fetchone()
            missing, have = (int(both[0]), int(both[1])) if both else (0, 0)
        if missing or (mode == "replace" and have != expected) or have < expected:
            altered = f", {missing} row(s) of the backup missing or altered" if missing else ""
            raise RestoreCheckError(
                f"after restore, table {t.name} of tenant {tenant} differs from the backup ({have} rows where the "
                f"backup has {expected}{altered}): {why or _why(conn, t, tenant)}; rolled back, nothing changed",
                table=t.name,
                tenant_id=tenant,
            )
    if fk_check:
        _check_foreign_keys(conn, catalog, work, tenant, fast, {n: m.rows for n, m in manifest_tables.items()})


_STOP = "stop the app's writes for this tenant (or take it offline) and run the restore again"


def _why_settled(t: RestoreTable, now: delta.Settled, mode: Mode) -> str:
    """Why a table restored by its delta differs, from the counts of its check ('' to ask :func:`_why`)."""
    if now.theirs:
        return (
            f"{now.theirs} row(s) of the tenant in {t.name} were written by another session while the restore ran; "
            + _STOP
        )
    if now.missing:
        return (
            f"{now.missing} row(s) of the backup in {t.name} are no longer the tenant's: another session deleted "
            f"them, or moved them to another tenant, while the restore ran; {_STOP}"
        )
    if now.extra and mode == "replace":
        return (
            f"{now.extra} row(s) of the tenant in {t.name} are not in the backup: another session wrote them, or "
            f"they entered the tenant with a row they belong to, while the restore ran; {_STOP}"
        )
    return ""


def _why(conn: psycopg.Connection, t: RestoreTable, tenant: str) -> str:
    """Why the tenant's rows differ from the staged ones after the apply: rows that differ and
    that this transaction did not write were written by another session while the restore ran
    (READ COMMITTED: each statement sees what others committed); rows it wrote that still differ
    were rewritten by a trigger."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE c.xmin = pg_current_xact_id()::xid), "
            "count(*) FILTER (WHERE c.xmin <> pg_current_xact_id()::xid) "
            "FROM ({current}) c WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {same}){written}"
        ).format(
            current=t.current(["xmin", *t.common]),
            stage=t.stage_ident(),
            same=sql.SQL("{} = {}").format(t.row_text("c"), t.row_text("s")),
            # A partly staged table: only the keys it wrote have a staged row to equal.
            written=sql.SQL(" AND ({}) IN (SELECT {} FROM {} WHERE {} IN ('i', 'u'))").format(
                t.cols(t.pk, "c"), t.cols(t.pk), t.delta_ident(), ACTION
            )
            if t.partial
            else sql.SQL(""),
        ),
        {"tenant": tenant},
    ).fetchone()
    ours, theirs = (int(row[0]), int(row[1])) if row else (0, 0)
    if t.keyed and (held := count_rows(conn, t.count_foreign_keys(), tenant)):
        return (
            f"{held} row(s) of the backup have the key ({', '.join(t.pk)}) {TAKEN}, since the backup or "
            "since the restore began, so the restore could not write them"
        )
    if theirs:
        return (
            f"{theirs} row(s) of the tenant in {t.name} were written by another session while the restore ran; {_STOP}"
        )
    if ours:
        return f"{ours} row(s) that the restore wrote were changed by a trigger on {t.name} (the app's triggers fired)"
    return (
        "rows of the backup are missing: another session deleted them while the restore ran, a trigger "
        "removed them, or their key is held by another tenant's row (a dry run names the latter)"
    )


def _check_foreign_keys(
    conn: psycopg.Connection,
    catalog: Catalog,
    work: list[RestoreTable],
    tenant: str,
    fast: list[RestoreTable],
    rows_of: dict[str, int],
) -> None:
    """No restored row references a missing row (replica mode let the restore's writes skip the
    keys' triggers).

    Of a table restored by its delta (see restore/delta.py), only the changes can break a key:
    the rows it inserted or updated, and its rows that name a key the apply deleted from a
    restored parent. Every other row of it is a backup's row, unchanged, which met the key when
    the backup was taken, and no other session wrote it since (the check before this one); a
    parent outside the restore could not lose a row it references (its key's trigger fired for
    whoever deleted)."""
    names = {t.name: t for t in work}
    changes = {t.name: delta.counts(conn, t) for t in fast}  # (written, deleted) by the apply
    for fk in catalog.foreign_keys:
        child = names.get(fk.table)
        if child is None:
            continue
        parent = names.get(fk.ref_table)
        incoming = delta.references_to_deleted(fk, child, parent) if parent is not None and parent in fast else None
        if child in fast and (parent is None or incoming is not None):
            written = changes[child.name][0]
            orphans = 0
            if written:  # the rows it wrote, read by key while few; else as the tenant's rows
                rows = (
                    delta.written_rows(child, sorted(set(fk.columns)))
                    if written * 10 < rows_of[child.name]
                    else sql.SQL("({})").format(child.current(sorted(set(fk.columns))))
                )
                orphans += count_rows(conn, dangling(fk, rows, sql.SQL("count(*)")), tenant)
            if incoming is not None and parent is not None and changes[parent.name][1]:
                orphans += count_rows(conn, incoming, tenant)
        else:
            rows = sql.SQL("({})").format(child.current(sorted(set(fk.columns))))
            orphans = count_rows(conn, dangling(fk, rows, sql.SQL("count(*)")), tenant)
        if orphans:
            raise RestoreCheckError(
                f"after restore, {orphans} row(s) of {fk.table} reference missing rows of {fk.ref_table} "
                f"({fk.name}); rolled back, nothing changed",
                table=fk.table,
                tenant_id=tenant,
            )
