"""Retention, reconciliation and the schedule sync, each as one sequence (see flows/runner.py)."""

from __future__ import annotations

from flows.runner import Runner
from tasks import maintenance as t
from tasks.report import publish_prune_report, publish_reconcile_report, publish_sync_report
from tenant_backup.errors import StorageError
from tenant_backup.operations.maintenance import PruneReport
from tenant_backup.operations.reconcile import ReconcileReport
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.operations.schedules import SyncReport

__all__ = ["prune_backups", "reconcile_storage", "sync_schedules"]


def prune_backups(
    run: Runner,
    policy: RetentionPolicy,
    tenant_id: str | None,
    dry_run: bool,
    database_block: str | None,
    storage_block: str | None,
) -> PruneReport:
    """Apply the retention rules; a backup that could not be deleted keeps its row and fails the run."""
    report = run(t.prune, policy, tenant_id, dry_run, database_block, storage_block)
    for backup_id, error in report.errors.items():
        run.warn(f"backup {backup_id} not deleted (its row stays for the next run): {error}")
    run.report(publish_prune_report, report, tenant_id)
    if report.errors:
        raise StorageError(
            f"{len(report.errors)} backup(s) could not be deleted (their rows stay for the next run): "
            + "; ".join(f"{b}: {e}" for b, e in report.errors.items())
        )
    return report


def reconcile_storage(
    run: Runner, clean: bool, database_block: str | None, storage_block: str | None
) -> ReconcileReport:
    report = run(t.reconcile, clean, database_block, storage_block)
    run.report(publish_reconcile_report, report)
    return report


def sync_schedules(
    run: Runner, deployment: str, timezone: str, profile: str | None, database_block: str | None
) -> SyncReport:
    """One cron schedule per active backup_schedules row; invalid rows are reported and skipped."""
    rows, invalid = run(t.read_schedules, database_block)
    for bad in invalid:
        run.warn(f"backup_schedules row {bad.id} ({bad.nom}) skipped: {bad.error}")
    changes = run(t.sync_deployment_schedules, rows, invalid, deployment, timezone, profile, database_block)
    report = SyncReport(deployment=deployment, timezone=timezone, changes=changes, invalid=invalid)
    run.report(publish_sync_report, report)
    return report
