"""Every deployment of tenant-backup, in one place.

``tenant-backup serve`` serves them all from one process (the embedded default); ``prefect.yaml``
declares the same ones for ``prefect deploy --all`` onto a process work pool, where several
workers share the tenants. The apps trigger restores through the Prefect API:
``POST /api/deployments/{id}/create_flow_run`` on ``restore-backup/restore-now``, or
``run_deployment("restore-backup/restore-now", parameters=...)``.
"""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.schedules import Cron, Interval

from flows.backup import backup_all_tenants, backup_tenant
from flows.maintenance import prune_backups, reconcile_storage, sync_schedules
from flows.restore import restore_backup, verify_backup
from flows.watch import check_freshness, verify_backups

__all__ = ["DEPLOYMENTS", "build_deployments", "register_block_types", "serve_all"]

# flow name / deployment name, as run_deployment and the REST API name them.
DEPLOYMENTS = {
    "backup_all": "backup-all-tenants/every-12-hours",
    "backup": "backup-tenant/backup-now",
    "scheduled": "backup-tenant/app-schedules",
    "restore": "restore-backup/restore-now",
    "verify": "verify-backup/verify-now",
    "retention": "prune-backups/nightly-retention",
    "reconcile": "reconcile-storage/reconcile-now",
    "sync": "sync-schedules/every-5-minutes",
    "verify_all": "verify-backups/nightly-verification",
    "freshness": "check-freshness/hourly",
}


def build_deployments(
    *,
    timezone: str = "UTC",
    backup_cron: str = "0 */12 * * *",
    retention_cron: str = "30 3 * * *",
    sync_seconds: int = 300,
    profile: str = "pos",
    verify_cron: str = "0 4 * * *",
    verify_sample: int | None = None,
) -> list[Any]:
    """The deployments: seed 001's pg_cron schedule (every 12 hours) on backup-all-tenants, a
    daily retention, the schedule sync every 5 minutes, a nightly verification of the newest
    backups, an hourly freshness check, and on-demand ones."""
    return [
        backup_all_tenants.to_deployment(
            name="every-12-hours",
            schedules=[Cron(backup_cron, timezone=timezone)],
            parameters={"profile": profile, "backup_type": "scheduled"},
            description="Back up every tenant (replaces seed 001's pg_cron job).",
        ),
        backup_tenant.to_deployment(
            name="backup-now", parameters={"profile": profile}, description="Back up one tenant now."
        ),
        # No schedules in code: the sync adds one per backup_schedules row, and a restart of
        # `serve` keeps them (Prefect replaces API-added schedules only when code defines some).
        backup_tenant.to_deployment(
            name="app-schedules",
            parameters={"profile": profile, "backup_type": "scheduled"},
            description="Per-tenant schedules from the app's backup_schedules table (managed by sync-schedules).",
        ),
        restore_backup.to_deployment(
            name="restore-now", description="Restore a backup; apps trigger it through the Prefect API."
        ),
        verify_backup.to_deployment(name="verify-now", description="Check a backup without restoring it."),
        prune_backups.to_deployment(
            name="nightly-retention",
            schedules=[Cron(retention_cron, timezone=timezone)],
            description="Retention for every tenant (seed 001: at most 50 backups, 7 days).",
        ),
        reconcile_storage.to_deployment(name="reconcile-now", description="Compare storage with the ledger."),
        sync_schedules.to_deployment(
            name="every-5-minutes",
            schedules=[Interval(sync_seconds)],
            parameters={"timezone": timezone, "profile": profile},
            description="Apply the backup_schedules table to the scheduled deployment.",
        ),
        verify_backups.to_deployment(
            name="nightly-verification",
            schedules=[Cron(verify_cron, timezone=timezone)],
            parameters={"sample": verify_sample} if verify_sample else {},
            description="Test-restore (rolled back) each tenant's newest backup; fails when one does not restore.",
        ),
        check_freshness.to_deployment(
            name="hourly",
            schedules=[Interval(3600)],
            parameters={"profile": profile},
            description="Fails when a tenant's newest backup is older than promised, or its backup or "
            "verification failed.",
        ),
    ]


def register_block_types() -> None:
    """Make the block types known to the Prefect API, so that the UI can create them (what
    ``prefect block register -m blocks`` does)."""
    from blocks import BackupStorage, TenantDatabase

    for block in (TenantDatabase, BackupStorage):
        block.register_type_and_schema()


def serve_all(**kwargs: Any) -> None:
    """Register the block types, then serve every deployment from this process until it is
    stopped. Backups at once are bounded by the database's backup slots (TENANT_BACKUP_SLOTS),
    not by anything of Prefect's."""
    from deployments.automation import notify_on_failure

    register_block_types()
    notify_on_failure()  # with TENANT_BACKUP_NOTIFY_BLOCK: failures reach a person
    serve(*build_deployments(**kwargs))
