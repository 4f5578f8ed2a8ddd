"""Maintenance flows: retention, storage reconciliation, and the schedule sync that replaces
seed 000's per-établissement scheduling (and seed 001's pg_cron cleanup)."""

from __future__ import annotations

from prefect import flow

from flows.prefect_runner import PrefectRunner
from flows.sequences import maintenance as sequences
from tenant_backup.operations.maintenance import PruneReport
from tenant_backup.operations.reconcile import ReconcileReport
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.operations.schedules import SyncReport
from tenant_backup.settings import get_settings

__all__ = ["SCHEDULED_BACKUP_DEPLOYMENT", "prune_backups", "reconcile_storage", "sync_schedules"]

# The deployment that carries one schedule per backup_schedules row. Its code defines no
# schedules, so restarting `serve` keeps the ones the sync added.
SCHEDULED_BACKUP_DEPLOYMENT = "backup-tenant/app-schedules"


@flow(
    name="prune-backups",
    flow_run_name="prune-{tenant_id}",
    description="Retention: delete the backups the rules do not keep (object first, then ledger row).",
)
def prune_backups(
    tenant_id: str | None = None,
    dry_run: bool = False,
    max_backups: int | None = None,
    max_age_days: int | None = None,
    keep_daily: int | None = None,
    keep_weekly: int | None = None,
    keep_monthly: int | None = None,
    database_block: str | None = None,
    storage_block: str | None = None,
) -> PruneReport:
    """Apply the retention rules to one tenant, or to every tenant when empty.

    Args:
        tenant_id: One tenant; empty for all.
        dry_run: List what would go, delete nothing.
        max_backups: At most this many per tenant (default TENANT_BACKUP_MAX_BACKUPS, 50).
        max_age_days: None older, unless made by a schedule with its own retention_jours
            (default TENANT_BACKUP_MAX_AGE_DAYS, 7).
        keep_daily: Also keep the newest backup of each of the last N days.
        keep_weekly: … of each of the last N ISO weeks.
        keep_monthly: … of each of the last N months.
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    The tenant's newest completed full backup is always kept.
    """
    policy = RetentionPolicy.from_settings(
        get_settings(),
        max_backups=max_backups,
        max_age_days=max_age_days,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
    )
    return sequences.prune_backups(PrefectRunner(), policy, tenant_id, dry_run, database_block, storage_block)


@flow(
    name="reconcile-storage",
    description="Find this database's objects without a ledger row and ledger rows whose object is gone; clean "
    "on request. Other databases' objects are reported as not ours and never touched.",
)
def reconcile_storage(
    clean: bool = False, database_block: str | None = None, storage_block: str | None = None
) -> ReconcileReport:
    """Compare storage with the ledger.

    Args:
        clean: Delete orphan objects (in this database's folder, of tenants no run holds), abort
            their incomplete uploads, and mark rows without an object failed.
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    return sequences.reconcile_storage(PrefectRunner(), clean, database_block, storage_block)


@flow(
    name="sync-schedules",
    description="Make the scheduled-backup deployment's schedules match the backup_schedules table.",
)
def sync_schedules(
    deployment: str = SCHEDULED_BACKUP_DEPLOYMENT,
    timezone: str | None = None,
    profile: str | None = None,
    database_block: str | None = None,
) -> SyncReport:
    """One cron schedule per active backup_schedules row; invalid rows are reported and skipped.

    Args:
        deployment: The deployment that carries the schedules.
        timezone: Time zone of heure_execution (default TENANT_BACKUP_TIMEZONE).
        profile: Profile of the scheduled backups (default: the deployment's).
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
    """
    zone = timezone or get_settings().timezone
    return sequences.sync_schedules(PrefectRunner(), deployment, zone, profile, database_block)
