"""Restore one tenant's rows from a verified artifact: plan, then apply in one transaction.

Every table's CSV is streamed with ``COPY … FROM STDIN`` into a temporary staging table typed
like the target table; then set-based SQL compares staging with the tenant's current rows:

* insert the rows whose key is missing (parents first),
* update the rows whose key exists and whose values differ (unchanged rows are not touched),
* with ``replace``, delete the tenant's rows whose key is not in the backup (children first).

All of it runs in one transaction under the tenant's advisory lock and a ``lock_timeout``;
before commit the tenant's rows are compared with staging (counts, and ``EXCEPT ALL`` both ways)
and any difference rolls everything back. ``session_replication_role = replica`` is used when
the role may set it (superuser, ``GRANT SET ON PARAMETER``, Supabase's allow-list): the app's
triggers do not re-fire and foreign keys are then checked set-based before commit; otherwise
rows go in foreign-key order, self-references and cycles are inserted NULL and set after, and
the app's triggers fire as for any write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import errors as pg_errors
from pydantic import BaseModel

from tenant_backup.artifact.reader import Artifact
from tenant_backup.errors import RestoreRefusedError, TenantBusyError
from tenant_backup.locks import take_tenant_lock_in_transaction
from tenant_backup.progress import Progress, publish
from tenant_backup.restore import delta, fingerprint, space
from tenant_backup.restore.apply import apply_changes, check_restored, move_sequences
from tenant_backup.restore.failures import database_failure, lock_holders
from tenant_backup.restore.readers import SnapshotReaders
from tenant_backup.restore.staging import (
    MissingReference,
    Mode,
    OutsideEffect,
    TableChange,
    count_changes,
    missing_references,
    outside_effects,
    prepare_tables,
    refuse_rows_without_values,
    refuse_taken_keys,
    refuse_unkeyed_cycles,
    stage,
)
from tenant_backup.results import SpaceNeed
from tenant_backup.tenancy.access import check_access
from tenant_backup.tenancy.catalog import Catalog, TableInfo, read_catalog
from tenant_backup.tenancy.diff import RestoreTable
from tenant_backup.tenancy.fk_order import restore_order
from tenant_backup.tenancy.profiles import stored_profile

__all__ = ["MissingReference", "OutsideEffect", "RestorePlan", "TableChange", "restore_tenant"]


class RestorePlan(BaseModel):
    backup_id: str
    source_tenant: str
    tenant_id: str
    mode: Mode
    applied: bool
    tables: list[TableChange]
    outside: list[OutsideEffect]
    missing_references: list[MissingReference] = []
    tenant_name: str | None = None  # the target tenant's, when the backup is its own
    backup_date: datetime | None = None  # the backup's snapshot time
    dropped_columns: dict[str, list[str]]
    added_columns: dict[str, list[str]]
    triggers: Literal["skipped", "fired"]
    space: SpaceNeed | None = None
    chain: list[str] = []  # an incremental's: the backups it was rebuilt from, its base first

    @property
    def totals(self) -> tuple[int, int, int]:
        return (
            sum(t.inserted for t in self.tables),
            sum(t.updated for t in self.tables),
            sum(t.deleted for t in self.tables),
        )


def restore_tenant(
    conn: psycopg.Connection,
    artifact: Artifact,
    *,
    backup_id: str,
    target_tenant: str,
    mode: Mode,
    tables: list[str] | None,
    apply: bool,
    lock_timeout: str,
    work_mem: str = "256MB",
    before_commit: Callable[[psycopg.Connection, RestorePlan], None] | None = None,
    cascade: bool = False,
    open_session: Callable[[], psycopg.Connection] | None = None,
    workers: int = 2,
) -> RestorePlan:
    """Plan (and with ``apply``, perform) the restore in one transaction on ``conn`` (autocommit).

    Without ``apply`` everything is rolled back: the plan's counts are what an apply would do now.
    With it, ``before_commit(conn, plan)`` runs last inside the transaction (the restore's log row
    is settled there), so that what it writes commits, or rolls back, with the rows. A statement
    the database refuses (a constraint, a lost connection) rolls it all back and is raised as a
    :class:`RestoreFailedError` naming the table and the constraint. ``open_session`` opens a
    session of the same database for up to ``workers`` readers of the tenant's rows in the
    restore's snapshot (restore/readers.py); without it, ``conn`` reads them.
    """
    try:
        return _in_one_transaction(
            conn,
            artifact,
            backup_id=backup_id,
            target_tenant=target_tenant,
            mode=mode,
            tables=tables,
            apply=apply,
            lock_timeout=lock_timeout,
            work_mem=work_mem,
            before_commit=before_commit,
            cascade=cascade,
            open_session=open_session,
            workers=workers,
        )
    except pg_errors.LockNotAvailable as exc:
        busy = TenantBusyError(
            f"the restore into tenant {target_tenant} waited longer than lock_timeout={lock_timeout} for a lock "
            f"(a row it must change, or a table: an ALTER, a long transaction) held by "
            f"{lock_holders(conn, list(artifact.manifest.tables))}: rolled back, nothing changed; run it again "
            "once they are done, or raise TENANT_BACKUP_LOCK_TIMEOUT",
            tenant_id=target_tenant,
            backup_id=backup_id,
        )
        busy.exit_code = 3  # it had started: rolled back, not refused up front
        raise busy from exc
    except psycopg.Error as exc:
        raise database_failure(exc, target_tenant, backup_id) from exc


def _in_one_transaction(
    conn: psycopg.Connection,
    artifact: Artifact,
    *,
    backup_id: str,
    target_tenant: str,
    mode: Mode,
    tables: list[str] | None,
    apply: bool,
    lock_timeout: str,
    work_mem: str,
    before_commit: Callable[[psycopg.Connection, RestorePlan], None] | None,
    cascade: bool,
    open_session: Callable[[], psycopg.Connection] | None,
    workers: int,
) -> RestorePlan:
    manifest = artifact.state  # a chain's tables as rebuilt at its last snapshot
    profile = stored_profile(manifest.profile_doc, manifest.tenant_column, manifest.db_schema)
    with conn.transaction():
        # work_mem: the anti-joins and EXCEPT ALL below hash instead of sorting to disk.
        # random_page_cost (at most 1.1, as on SSDs): the writes and checks of a small change look up
        # a few thousand keys of tables whose pages are in cache, by index rather than by a full scan.
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('work_mem', %s, true), "
            "set_config('random_page_cost', least(current_setting('random_page_cost')::float8, 1.1)::text, true)",
            (lock_timeout, work_mem),
        )
        try:
            take_tenant_lock_in_transaction(conn, target_tenant, "restore", lock_timeout)
        except TenantBusyError as exc:
            exc.backup_id = backup_id
            raise
        replica = _try_replica(conn)
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        catalog = read_catalog(conn, profile.db_schema, profile.schemas)
        work = prepare_tables(catalog, profile, manifest.tables, manifest.tenant_id, target_tenant, tables, backup_id)
        order = restore_order([t.name for t in work], catalog.foreign_keys)
        by_name = {t.name: t for t in work}
        ordered = [by_name[n] for n in order.tables]
        check_access(
            conn, _needs(catalog, ordered, mode), action="restore into", tenant_id=target_tenant, temp_tables=True
        )
        if not replica:
            refuse_unkeyed_cycles(order, by_name, backup_id)
        need = space.estimate(conn, ordered, manifest.tables, work_mem)
        space.check_room(need, target_tenant, backup_id)
        # Where only these statements write (see restore/delta.py), keyed tables pay for what
        # changed: compared from the snapshot taken here, and staged by their changed rows where
        # they can be (restore/fingerprint.py).
        fast = replica and not delta.always_triggers(conn, ordered)
        snap = delta.snapshot(conn) if fast else ""
        rewrite = target_tenant != manifest.tenant_id
        restored = {t.name for t in ordered}
        by_lines = [t for t in ordered if fast and fingerprint.eligible(artifact, t, mode, restored, rewrite=rewrite)]
        if by_lines:
            # Other sessions read the tenant's rows where that pays for their start (a big tenant).
            big = sum(manifest.tables[t.name].rows for t in by_lines) >= fingerprint.PARALLEL_ROWS
            with SnapshotReaders(conn, open_session, workers if big else 0) as readers:
                fingerprint.stage_changed(conn, artifact, by_lines, target_tenant, snap, readers)
        for t in ordered:
            if not t.partial:
                stage(conn, artifact, t, target_tenant, rewrite=rewrite)
        refuse_rows_without_values(conn, ordered, target_tenant, backup_id)
        # A plan counts ahead (and is rolled back); an apply counts what its statements do, and a
        # key of another tenant's row shows up in its check as a missing row.
        if not apply:
            planned = [_plan_counts(conn, t, target_tenant, mode, manifest.tables[t.name].rows) for t in ordered]
            refuse_taken_keys([(t, taken) for t, (_, taken) in zip(ordered, planned, strict=True)], target_tenant)
            changes = [
                change.model_copy(update={"staged": t.staged_rows})
                for t, (change, _) in zip(ordered, planned, strict=True)
            ]
        else:
            changes = [
                TableChange(
                    table=t.name,
                    rows=manifest.tables[t.name].rows,
                    inserted=0,
                    updated=0,
                    deleted=0,
                    matched_by=t.matched_by,
                    staged=t.staged_rows,
                )
                for t in ordered
            ]
        outside = outside_effects(conn, catalog, ordered, target_tenant) if mode == "replace" else []
        missing = missing_references(conn, catalog, ordered, target_tenant)
        plan = RestorePlan(
            backup_id=backup_id,
            source_tenant=manifest.tenant_id,
            tenant_id=target_tenant,
            mode=mode,
            applied=False,
            tables=changes,
            outside=outside,
            missing_references=missing,
            tenant_name=manifest.tenant_name if manifest.tenant_id == target_tenant else None,
            backup_date=manifest.date,
            dropped_columns={t.name: t.dropped for t in ordered if t.dropped},
            added_columns={t.name: t.added for t in ordered if t.added},
            triggers="skipped" if replica else "fired",
            chain=[link.manifest.backup_id for link in artifact.chain],
            space=space.with_writes(
                conn,
                need,
                ordered,
                manifest.tables,
                {c.table: (c.inserted + c.updated, c.deleted) for c in changes},
            )
            if not apply
            else need,
        )
        if not apply:
            raise psycopg.Rollback()
        if missing:
            raise RestoreRefusedError(
                "the backup's rows reference rows that this database lacks and the restore does not bring: "
                + "; ".join(
                    f"{m.rows} row(s) of {m.table} via {m.foreign_key} -> {m.references} (e.g. {', '.join(m.examples)})"
                    for m in missing
                )
                + "; create those rows first (or restore those tables too); nothing was written",
                tenant_id=target_tenant,
                backup_id=backup_id,
                table=missing[0].table,
            )
        blocked = [o for o in outside if o.action == "block" and o.rows]
        if blocked:
            raise RestoreRefusedError(
                "the restore would delete rows that other tables still reference: "
                + "; ".join(f"{o.rows} row(s) of {o.table} via {o.foreign_key}" for o in blocked)
                + "; restore those tables too, or merge instead (--mode merge; mode: merge through the API)",
                tenant_id=target_tenant,
                backup_id=backup_id,
            )
        if outside and not cascade:
            raise RestoreRefusedError(
                "the restore would delete or change rows of tables outside it (their foreign keys reference rows "
                "the backup does not have): "
                + "; ".join(f"{o.rows} row(s) of {o.table} ({o.action}, {o.via or o.foreign_key})" for o in outside)
                + "; restore those tables too, merge instead (--mode merge), or let their ON DELETE rules act "
                "(--cascade; cascade: true through the API); nothing was written",
                tenant_id=target_tenant,
                backup_id=backup_id,
                table=outside[0].table,
            )
        if replica and any(o.rows for o in outside):
            # Replica mode skips the cascades these rows need: let the database do them.
            conn.execute("SET LOCAL session_replication_role = origin")
            replica = False
            for t in ordered:
                if t.partial:  # compared in full by the apply: every row of the backup
                    fingerprint.stage_whole(conn, artifact, t, target_tenant)
            plan = plan.model_copy(update={"triggers": "fired"})
        publish(Progress(target_tenant, "(applying the changes)", 0, 0))
        by_delta = [t for t in ordered if t.keyed] if replica and fast else []
        for t in by_delta:
            if not t.partial:  # (a partly staged table was classified as it was staged)
                delta.classify(conn, t, target_tenant, mode, snap)
        need = space.with_writes(
            conn, need, ordered, manifest.tables, delta.writes(conn, by_delta, ordered, manifest.tables)
        )
        space.check_room(need, target_tenant, backup_id)
        plan = plan.model_copy(update={"space": need})
        rest = [t for t in ordered if t not in by_delta]
        done = {
            **delta.apply_delta(conn, by_delta, target_tenant, mode),
            **apply_changes(conn, rest, order, target_tenant, mode, broken=not replica),
        }
        move_sequences(conn, ordered)
        publish(Progress(target_tenant, "(checking before commit)", 0, 0))
        check_restored(
            conn, catalog, ordered, target_tenant, mode, manifest.tables, fk_check=replica, by_delta=(by_delta, snap)
        )
        counted = [
            done[c.table].model_copy(update={"rows": c.rows, "staged": by_name[c.table].staged_rows}) for c in changes
        ]
        written = {c.table: (c.inserted + c.updated, c.deleted) for c in counted}
        need = space.with_writes(conn, need, ordered, manifest.tables, written)  # as done, not as feared
        plan = plan.model_copy(update={"applied": True, "tables": counted, "space": need})
        if before_commit is not None:
            before_commit(conn, plan)
    return plan


def _plan_counts(
    conn: psycopg.Connection, t: RestoreTable, tenant: str, mode: Mode, rows: int
) -> tuple[TableChange, int]:
    """A plan's counts for one table, and its backed-up keys another tenant holds: a keyed table
    is compared once, into its delta (rolled back with the plan); one without a key as rows."""
    if not t.keyed:
        return count_changes(conn, t, tenant, mode, rows), 0
    if not t.partial:
        delta.classify(conn, t, tenant, mode)
    return delta.count_delta(conn, t, rows)


def _try_replica(conn: psycopg.Connection) -> bool:
    """``SET LOCAL session_replication_role = replica`` if this role may; False otherwise."""
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the restore
            conn.execute("SET LOCAL session_replication_role = replica")
        return True
    except pg_errors.InsufficientPrivilege:
        return False


def _needs(catalog: Catalog, work: list[RestoreTable], mode: Mode) -> dict[TableInfo, list[str]]:
    """What the restore reads and writes: the restored tables (read, insert, update, delete),
    the tables their tenant filters and foreign keys read, and in replace mode the tables whose
    rows reference restored ones (their rows are counted before a delete)."""
    names = {t.name for t in work}
    needs: dict[TableInfo, list[str]] = {}

    def need(name: str, *privileges: str) -> None:
        if (table := catalog.table(name)) is not None:
            needs.setdefault(table, []).extend(privileges)

    for t in work:
        need(t.name, "SELECT", "INSERT", *(["UPDATE"] if t.keyed else []), *(["DELETE"] if mode == "replace" else []))
        for hop in t.scope.path:
            need(hop.ref_table, "SELECT")
    for fk in catalog.foreign_keys:
        if fk.table in names:
            need(fk.ref_table, "SELECT")
        elif fk.ref_table in names and mode == "replace":
            need(fk.table, "SELECT")
    return needs
