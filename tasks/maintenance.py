"""Steps of the maintenance flows: retention, reconciliation, schedule sync (see tasks/step.py).
The schedule sync talks to the Prefect API (it imports Prefect when it runs); the others do not."""

from __future__ import annotations

from datetime import UTC, datetime

from blocks import database_url, open_storage
from tasks.step import step
from tenant_backup import ledger
from tenant_backup.db import connect
from tenant_backup.errors import ConfigurationError
from tenant_backup.operations import maintenance as steps
from tenant_backup.operations import schedules
from tenant_backup.operations.maintenance import PruneReport
from tenant_backup.operations.reconcile import ReconcileReport
from tenant_backup.operations.reconcile import reconcile as reconcile_storage
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.operations.schedules import SLUG_PREFIX, InvalidSchedule, ScheduleRow, SyncChange, next_run
from tenant_backup.settings import get_settings

__all__ = ["prune", "read_schedules", "reconcile", "stamp_schedule", "sync_deployment_schedules"]


@step(
    "prune-backups",
    run_name="prune-{tenant_id}",
    summary=lambda r: (
        f"{len(r.to_delete)} {'to delete' if r.dry_run else 'deleted'}, "
        f"{len(r.decisions) - len(r.to_delete)} kept, {len(r.errors)} error(s)"
    ),
)
def prune(
    policy: RetentionPolicy, tenant_id: str | None, dry_run: bool, database_block: str | None, storage_block: str | None
) -> PruneReport:
    """Delete what the retention rules do not keep (object first, then row)."""
    return steps.prune(
        database_url(database_block),
        get_settings(),
        open_storage(storage_block),
        policy,
        tenant_id=tenant_id,
        dry_run=dry_run,
    )


@step(
    "reconcile-storage",
    summary=lambda r: f"{len(r.orphans)} orphan(s), {len(r.missing)} missing, {len(r.not_ours)} not ours",
)
def reconcile(clean: bool, database_block: str | None, storage_block: str | None) -> ReconcileReport:
    """Objects without a ledger row (ours, busy, not ours), ledger rows without an object."""
    return reconcile_storage(database_url(database_block), get_settings(), open_storage(storage_block), clean=clean)


@step("read-schedules", summary=lambda r: f"{len(r[0])} valid, {len(r[1])} invalid row(s)")
def read_schedules(database_block: str | None) -> tuple[list[ScheduleRow], list[InvalidSchedule]]:
    """Every backup_schedules row, validated (seed 000's backupScheduleSchema)."""
    settings = get_settings()
    with connect(database_url(database_block), lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        return schedules.read_schedules(conn, settings.ledger_schema)


@step("sync-deployment-schedules", summary=lambda changes: f"{len(changes)} schedule(s)")
def sync_deployment_schedules(
    rows: list[ScheduleRow],
    invalid: list[InvalidSchedule],
    deployment: str,
    timezone: str,
    profile: str | None,
    database_block: str | None,
) -> list[SyncChange]:
    """Make the deployment's ``backup-schedule-*`` schedules what the active rows ask for, and
    write ``prochaine_execution`` back. Running it twice changes nothing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    now = datetime.now(UTC)
    wanted = schedules.wanted_schedules(rows, profile)
    changes: list[SyncChange] = []
    with get_client(sync_client=True) as client:
        try:
            target = client.read_deployment_by_name(deployment)
        except ObjectNotFound as exc:
            raise ConfigurationError(
                f"deployment {deployment} does not exist on this Prefect API: start `tenant-backup serve` or "
                "`prefect deploy --all` first, or pass the deployment that carries the schedules"
            ) from exc
        current = {
            s.slug: s for s in client.read_deployment_schedules(target.id) if s.slug and s.slug.startswith(SLUG_PREFIX)
        }
        for slug, want in wanted.items():
            schedule = CronSchedule(cron=want.cron, timezone=timezone)
            have = current.get(slug)
            if have is None:
                client.create_deployment_schedules(
                    target.id,
                    [DeploymentScheduleCreate(schedule=schedule, active=True, parameters=want.parameters, slug=slug)],
                )
                action = "created"
            elif have.schedule != schedule or have.parameters != want.parameters or not have.active:
                client.update_deployment_schedule(
                    target.id, have.id, active=True, schedule=schedule, parameters=want.parameters
                )
                action = "updated"
            else:
                action = "unchanged"
            upcoming = next_run(want.row, now, timezone)
            changes.append(
                SyncChange(slug=slug, action=action, cron=want.cron, tenant_id=want.row.tenant_id, next_run=upcoming)
            )
        for slug, have in current.items():
            if slug not in wanted:
                client.delete_deployment_schedule(target.id, have.id)
                changes.append(SyncChange(slug=slug, action="removed"))
    settings = get_settings()
    with connect(database_url(database_block), lock_timeout=settings.lock_timeout) as conn:
        schedules.stamp(conn, settings.ledger_schema, schedules.next_runs(rows, invalid, now, timezone))
    return changes


@step("stamp-schedule")
def stamp_schedule(schedule_id: str, timezone: str, database_block: str | None) -> None:
    """A scheduled backup ran: write ``derniere_execution`` and the next run."""
    settings = get_settings()
    with connect(database_url(database_block), lock_timeout=settings.lock_timeout) as conn:
        valid, _ = schedules.read_schedules(conn, settings.ledger_schema, schedule_id)
        now = datetime.now(UTC)
        following = next_run(valid[0], now, timezone) if valid and valid[0].actif else None
        schedules.mark_ran(conn, settings.ledger_schema, schedule_id, now, following)
