"""Operations on stored backups as plain steps: retention, reconciliation, download URLs,
deletion, schedule bookkeeping. ``tasks/maintenance.py`` wraps them for Prefect.

Deleting a backup removes its object first, then its ledger row: if the object cannot be
removed the row stays, and the next run tries again; a row never points at nothing because of
us.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.db import connect
from tenant_backup.errors import ConfigurationError, LedgerError, TenantBackupError
from tenant_backup.ledger import BackupFilter, BackupRow
from tenant_backup.operations import schedules
from tenant_backup.operations.retention import Decision, RetentionPolicy, decide, orphans_and_missing
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.profiles import stored_profile

__all__ = [
    "DeleteConfirmation",
    "PruneReport",
    "ReconcileReport",
    "delete_backup",
    "download_url",
    "prune",
    "reconcile",
]

DeleteConfirmation = "DELETE"


class PruneReport(BaseModel):
    dry_run: bool
    decisions: list[Decision]
    deleted: list[str]
    errors: dict[str, str]

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


class ReconcileReport(BaseModel):
    orphans: list[str]
    missing: list[str]
    cleaned: bool


def _key(storage: Storage, row: BackupRow) -> str | None:
    if not row.storage_path:
        return None
    try:
        return storage.key_of(row.storage_path)
    except TenantBackupError:
        return None  # written to another storage: not ours to touch


def _remove(conn: psycopg.Connection, schema: str, storage: Storage, row: BackupRow) -> None:
    """Object first, then the row (``conn`` is in autocommit: each row goes as its object goes)."""
    key = _key(storage, row)
    if row.storage_path and key is None:
        raise LedgerError(
            f"backup {row.id} lives in {row.storage_path}, outside the storage {storage.url}; "
            "run with that storage to delete it",
            backup_id=row.id,
        )
    if key is not None:
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
    """Apply ``policy`` (and each schedule's ``retention_jours``) to one tenant or all."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        rows = ledger.list_backups(conn, settings.ledger_schema, limit=None, where=BackupFilter(tenant_id=tenant_id))
        valid, _ = schedules.read_schedules(conn, settings.ledger_schema)
    days = {s.id: s.retention_jours for s in valid}
    decisions = decide(rows, policy, days, now or datetime.now(UTC))
    by_id = {r.id: r for r in rows}
    deleted: list[str] = []
    errors: dict[str, str] = {}
    if not dry_run:
        with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
            for decision in decisions:
                if decision.keep:
                    continue
                try:
                    _remove(conn, settings.ledger_schema, storage, by_id[decision.backup_id])
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
                    details={"deleted": deleted, "errors": errors},
                )
    return PruneReport(dry_run=dry_run, decisions=decisions, deleted=deleted, errors=errors)


def reconcile(db_url: str, settings: Settings, storage: Storage, *, clean: bool = False) -> ReconcileReport:
    """Objects without a ledger row, and completed rows without an object; with ``clean``, the
    objects are deleted and the rows marked failed."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        rows = ledger.list_backups(conn, settings.ledger_schema, limit=None)
    keys = {r.id: key for r in rows if (key := _key(storage, r)) is not None}
    orphans, missing = orphans_and_missing(rows, storage.list(), keys)
    if clean:
        for key in orphans:
            storage.remove(key)
        with connect(db_url, lock_timeout=settings.lock_timeout) as conn, conn.transaction():
            for row in missing:
                ledger.mark_missing(conn, settings.ledger_schema, row.id)
    return ReconcileReport(orphans=orphans, missing=[r.id for r in missing], cleaned=clean)


def download_url(db_url: str, settings: Settings, storage: Storage, backup_id: str, expires: int = 3600) -> str:
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        row = ledger.get_backup(conn, settings.ledger_schema, backup_id)
    key = _key(storage, row)
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
        row = ledger.get_backup(conn, settings.ledger_schema, backup_id)
        try:
            if confirm != DeleteConfirmation:
                raise ConfigurationError(
                    f"deleting backup {backup_id} is not confirmed: pass confirm={DeleteConfirmation!r}",
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
        _remove(conn, settings.ledger_schema, storage, row)
        ledger.log_action(
            conn,
            settings.ledger_schema,
            action="delete",
            result="success",
            tenant_id=row.tenant_id,
            performed_by=requested_by,
            details={"backup_id": backup_id, "storage_path": row.storage_path},
        )
    return {"backup_id": backup_id, "tenant_id": row.tenant_id, "deleted": True, "storage_path": row.storage_path}
