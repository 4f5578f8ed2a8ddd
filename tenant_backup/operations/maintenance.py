"""Operations on stored backups as plain steps: retention, download URLs, deletion, schedule
bookkeeping (reconciliation is :mod:`tenant_backup.operations.reconcile`). ``tasks/maintenance.py``
wraps them for Prefect.

Deleting a backup removes its object first, then its ledger row: if the object cannot be
removed the row stays, and the next run tries again; a row never points at nothing because of
us. An object that another database wrote (a row in a ledger cloned from prod into staging
records its owner) is never deleted: only the row goes, and the report says the object was left.
Rows written before owners were recorded count as ours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.db import DatabaseOwner, connect, read_owner
from tenant_backup.errors import ConfigurationError, LedgerError, TenantBackupError
from tenant_backup.ledger import BackupFilter, BackupRow, chains
from tenant_backup.operations import schedules
from tenant_backup.operations.retention import Decision, RetentionPolicy, decide
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.profiles import stored_profile

__all__ = [
    "DeleteConfirmation",
    "PruneReport",
    "delete_backup",
    "download_url",
    "prune",
]

DeleteConfirmation = "DELETE"


class PruneReport(BaseModel):
    dry_run: bool
    decisions: list[Decision]
    deleted: list[str]
    not_ours: list[str] = []  # of the backups to delete, those whose object another database wrote: row only
    errors: dict[str, str]

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def wrote_object(row: BackupRow, owner: DatabaseOwner) -> bool:
    """Whether this database wrote the row's object (rows from before owners were recorded: yes)."""
    return row.owner is None or row.owner == owner


def _remove(conn: psycopg.Connection, schema: str, storage: Storage, row: BackupRow, owner: DatabaseOwner) -> None:
    """Object first, then the row (``conn`` is in autocommit: each row goes as its object goes);
    the object of another database stays where it is. A backup that an incremental still needs
    (its parent) is refused: a chain goes as a whole, newest first."""
    needed_by = chains.dependents(conn, schema, row.id)
    if needed_by:
        raise LedgerError(
            f"backup {row.id} of tenant {row.tenant_id} is the parent of incremental backup(s) {', '.join(needed_by)}, "
            "which cannot be restored without it; delete those first (newest first), or keep it",
            backup_id=row.id,
            tenant_id=row.tenant_id,
        )
    if wrote_object(row, owner) and row.storage_path:
        key = storage.key_in(row.storage_path)
        if key is None:
            raise LedgerError(
                f"backup {row.id} of tenant {row.tenant_id} lives in {row.storage_path}, outside the storage "
                f"{storage.url}; run with that storage to delete it",
                backup_id=row.id,
                tenant_id=row.tenant_id,
            )
        storage.remove(key)
    ledger.delete_row(conn, schema, row.id)


def prune(
    db_url: str,
    settings: Settings,
    storage: Storage,
    policy: RetentionPolicy,
    *,
    tenant_id: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Apply ``policy`` (and each schedule's ``retention_jours``) to one tenant or all, over the
    backups of this storage: a backup written to another storage root is neither deleted nor counted
    (prune that storage to apply the rules there)."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        owner = read_owner(conn)
        listed = ledger.list_backups(conn, settings.ledger_schema, limit=None, where=BackupFilter(tenant_id=tenant_id))
        rows = [r for r in listed if r.storage_path is None or storage.key_in(r.storage_path) is not None]
        valid, _ = schedules.read_schedules(conn, settings.ledger_schema)
    days = {s.id: s.retention_jours for s in valid}
    decisions = decide(rows, policy, days, now or datetime.now(UTC))
    by_id = {r.id: r for r in rows}
    not_ours = [d.backup_id for d in decisions if not d.keep and not wrote_object(by_id[d.backup_id], owner)]
    deleted: list[str] = []
    errors: dict[str, str] = {}
    if not dry_run:
        with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
            for decision in decisions:
                if decision.keep:
                    continue
                try:
                    _remove(conn, settings.ledger_schema, storage, by_id[decision.backup_id], owner)
                    deleted.append(decision.backup_id)
                except TenantBackupError as exc:  # the row stays for the next run
                    errors[decision.backup_id] = str(exc)
            if deleted:
                ledger.log_action(
                    conn,
                    settings.ledger_schema,
                    action="prune",
                    result="failed" if errors else "success",
                    tenant_id=tenant_id,
                    details={"deleted": deleted, "object_left_not_ours": not_ours, "errors": errors},
                )
    return PruneReport(dry_run=dry_run, decisions=decisions, deleted=deleted, not_ours=not_ours, errors=errors)


def download_url(db_url: str, settings: Settings, storage: Storage, backup_id: str, expires: int = 3600) -> str:
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        row = ledger.get_backup(conn, settings.ledger_schema, backup_id)
    key = storage.key_in(row.storage_path) if row.storage_path else None
    if row.status != "completed" or key is None:
        raise LedgerError(
            f"backup {backup_id} is {row.status} and has no artifact in {storage.url} to download",
            backup_id=backup_id,
        )
    return storage.download_url(key, expires)


def delete_backup(
    db_url: str,
    settings: Settings,
    storage: Storage,
    backup_id: str,
    *,
    confirm: str | None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Delete one backup (seed 000's deleteBackup): typed confirmation, admins only, object then row."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        owner = read_owner(conn)
        row = ledger.get_backup(conn, settings.ledger_schema, backup_id)
        try:
            if confirm != DeleteConfirmation:
                raise ConfigurationError(
                    f"deleting backup {backup_id} is not confirmed: pass --confirm {DeleteConfirmation} "
                    f"(confirm: {DeleteConfirmation!r} in Python)",
                    backup_id=backup_id,
                    tenant_id=row.tenant_id,
                )
            if row.status in ("pending", "in_progress"):
                raise LedgerError(f"backup {backup_id} is still {row.status}; wait for it to end", backup_id=backup_id)
            if requested_by:
                profile = stored_profile(row.metadata.get("profile_doc"), row.tenant_column)
                check_admin(conn, profile, row.tenant_id, requested_by, "delete backups of")
        except TenantBackupError as exc:
            ledger.log_action(
                conn,
                settings.ledger_schema,
                action="delete",
                result="failed",
                tenant_id=row.tenant_id,
                backup_id=backup_id,
                performed_by=requested_by,
                error=str(exc),
            )
            raise
        _remove(conn, settings.ledger_schema, storage, row, owner)
        not_ours = not wrote_object(row, owner)
        ledger.log_action(
            conn,
            settings.ledger_schema,
            action="delete",
            result="success",
            tenant_id=row.tenant_id,
            performed_by=requested_by,
            details={"backup_id": backup_id, "storage_path": row.storage_path, "object_left_not_ours": not_ours},
        )
    return {
        "backup_id": backup_id,
        "tenant_id": row.tenant_id,
        "deleted": True,
        "storage_path": row.storage_path,
        "not_ours": not_ours,  # the object belongs to another database: only the ledger row was deleted
    }
