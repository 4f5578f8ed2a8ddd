"""Erasing a tenant (the right to erasure, after a customer leaves): its key, its objects, its rows.

In this order, each step durable before the next: (1) under the tenant's lock (no backup or
restore of it runs), its own key is destroyed and its schedules deleted, in one transaction: from
the commit on, every backup encrypted to that key is unreadable wherever a copy survives (a
replicated bucket, an old download); (2) every object of the tenant in this storage (its ledger
rows' artifacts and whatever else lies in its folder: leftovers of killed runs, objects whose row
was lost) is deleted, each ledger row right after its object. A run that stops half-way (storage
down) has already destroyed the key; running it again finishes the rest. The erasure is logged
in ``backup_restore_logs`` (action ``erase``), and the key's row stays as its record: it refuses
new backups of the tenant id.

Backups that were not encrypted to the tenant's key are deleted too, but a copy of them that
survives elsewhere stays readable: the dry run and the result list them. The ledger's own history
(dead row versions until VACUUM, WAL, the database's own backups) still holds the wrapped key until
it is vacuumed or expires; the key is wrapped to the operator's recipients, so reading it needs
both such a copy and the operator's identity.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.backup.assemble import tenant_prefix
from tenant_backup.db import connect, read_owner
from tenant_backup.errors import ConfigurationError, StorageError, TenantBackupError
from tenant_backup.ledger import BackupFilter, BackupRow, keys
from tenant_backup.locks import take_tenant_lock_in_transaction
from tenant_backup.operations.maintenance import wrote_object
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.profiles import stored_profile

__all__ = ["ERASE_CONFIRMATION", "ErasureReport", "erase_tenant"]

ERASE_CONFIRMATION = "ERASE"


class ErasureReport(BaseModel):
    tenant_id: str
    dry_run: bool
    key: str | None  # the public key of the tenant's own key (destroyed, or to be)
    key_destroyed_at: str | None = None
    backups: list[str]  # ledger rows of the tenant
    objects: list[str]  # storage keys of the tenant in this storage
    readable_copies: list[str]  # backups not encrypted to the tenant's key: copies elsewhere stay readable
    elsewhere: list[str] = []  # backups whose object lies in another storage root (not deleted here)
    schedules: int = 0
    deleted_objects: list[str] = []
    deleted_backups: list[str] = []
    errors: dict[str, str] = {}


def erase_tenant(
    db_url: str,
    settings: Settings,
    storage: Storage,
    tenant_id: str,
    *,
    confirm: str | None,
    dry_run: bool = False,
    requested_by: str | None = None,
) -> ErasureReport:
    """Erase ``tenant_id`` (see the module docstring); ``dry_run`` lists what would go."""
    schema = settings.ledger_schema
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, schema)
        owner = read_owner(conn)
        rows = ledger.list_backups(conn, schema, limit=None, where=BackupFilter(tenant_id=tenant_id))
        key = keys.get_key(conn, schema, tenant_id)
        # The ledger's spelling (a uuid typed in capitals is the same tenant): its key, its folder.
        tenant_id = rows[0].tenant_id if rows else key.tenant_id if key else ledger.uuid_spelling(tenant_id)
        try:
            if not dry_run and confirm != ERASE_CONFIRMATION:
                raise ConfigurationError(
                    f"erasing tenant {tenant_id} is not confirmed: it destroys its key and deletes its "
                    f"{len(rows)} backups for good; pass --confirm {ERASE_CONFIRMATION} (or --dry-run to list them)",
                    tenant_id=tenant_id,
                )
            if requested_by:
                if not rows:
                    raise ConfigurationError(
                        f"tenant {tenant_id} has no backup that records its profile's admin rule; erase it as the "
                        "operator (without --requested-by)",
                        tenant_id=tenant_id,
                    )
                profile = stored_profile(rows[0].metadata.get("profile_doc"), rows[0].tenant_column)
                check_admin(conn, profile, tenant_id, requested_by, "erase")
        except TenantBackupError as exc:
            if not dry_run:
                _log(conn, schema, tenant_id, requested_by, "failed", {}, str(exc))
            raise
        schedules = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(sql.Identifier(schema, "backup_schedules")),
            (tenant_id,),
        ).fetchone()
    recipient = key.recipient if key else None
    # Each of our rows' object, as a key of this storage (None: it lies in another storage root).
    located = {r.id: storage.key_in(r.storage_path) for r in rows if wrote_object(r, owner) and r.storage_path}
    by_key: dict[str, BackupRow] = {where: r for r in rows if (where := located.get(r.id) or "")}
    elsewhere = [backup_id for backup_id, where in located.items() if where is None]
    objects = sorted({*by_key, *storage.list(tenant_prefix(owner, tenant_id))})
    if not rows and not objects and not (schedules and schedules[0]) and (key is None or key.destroyed_at):
        already = f" (it was erased on {key.destroyed_at:%Y-%m-%d %H:%M} UTC)" if key and key.destroyed_at else ""
        raise ConfigurationError(
            f"tenant {tenant_id} has nothing here to erase{already}: no backup, key, schedule or object of it in "
            f"this ledger and storage {storage.url}; check the id (tenant-backup list, status)",
            tenant_id=tenant_id,
        )
    report = ErasureReport(
        tenant_id=tenant_id,
        dry_run=dry_run,
        key=recipient,
        key_destroyed_at=key.destroyed_at.isoformat() if key and key.destroyed_at else None,
        backups=[r.id for r in rows],
        objects=objects,
        readable_copies=[r.id for r in rows if recipient is None or recipient not in (r.encrypted_to or [])],
        elsewhere=elsewhere,
        schedules=int(schedules[0]) if schedules else 0,
    )
    if dry_run:
        return report
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        with conn.transaction():  # (1) the key and the schedules, under the tenant's lock
            take_tenant_lock_in_transaction(conn, tenant_id, "erasure", settings.lock_timeout)
            keys.destroy_key(conn, schema, tenant_id, requested_by)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(schema, "backup_schedules")),
                (tenant_id,),
            )
            conn.execute(  # every backup of the tenant goes, chains whole: none waits for its incrementals
                sql.SQL("UPDATE {} SET parent_id = NULL WHERE tenant_id = %s").format(
                    sql.Identifier(schema, "backups")
                ),
                (tenant_id,),
            )
        for object_key in objects:  # (2) each object, then its row
            try:
                storage.remove(object_key)
            except StorageError as exc:
                report.errors[object_key] = str(exc)
                continue
            report.deleted_objects.append(object_key)
            if (row := by_key.get(object_key)) is not None:
                ledger.delete_row(conn, schema, row.id)
                report.deleted_backups.append(row.id)
        kept = {row.id for k, row in by_key.items() if k in report.errors}  # their object is still there
        for row in rows:  # and the rows with no object here: failed backups, another database's objects
            if row.id not in {*report.deleted_backups, *elsewhere, *kept}:
                ledger.delete_row(conn, schema, row.id)
                report.deleted_backups.append(row.id)
        done = "failed" if report.errors or report.elsewhere else "success"
        _log(conn, schema, tenant_id, requested_by, done, _details(report), None)
        _vacuum(conn, schema)
    if report.errors or report.elsewhere:
        left = [*report.errors, *(f"backup {b} (another storage)" for b in report.elsewhere)]
        raise StorageError(
            f"erasure of tenant {tenant_id} is incomplete: its key is destroyed (its encrypted backups are "
            f"unreadable), but {len(left)} object{'s' if len(left) > 1 else ''} remain: {', '.join(left[:5])}; run "
            "erase-tenant again (with the "
            "other storage for backups stored elsewhere)",
            tenant_id=tenant_id,
        )
    return report


def _details(report: ErasureReport) -> dict[str, Any]:
    return {
        "key": report.key,
        "backups": len(report.deleted_backups),
        "objects": len(report.deleted_objects),
        "schedules": report.schedules,
        "readable_copies": report.readable_copies,
        "elsewhere": report.elsewhere,
        "errors": report.errors,
    }


def _log(
    conn: Any, schema: str, tenant_id: str, by: str | None, result: Any, details: dict[str, Any], error: str | None
) -> None:
    ledger.log_action(
        conn, schema, action="erase", result=result, tenant_id=tenant_id, performed_by=by, details=details, error=error
    )


def _vacuum(conn: Any, schema: str) -> None:
    """Remove the dead row version that still holds the wrapped key (best effort: needs ownership)."""
    with contextlib.suppress(psycopg.Error):  # a role that may not vacuum leaves it to autovacuum
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(schema, "tenant_keys")))
