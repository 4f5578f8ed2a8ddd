"""Backup flows: one tenant, or every tenant."""

from __future__ import annotations

import time
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger, task, unmapped
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import database_url
from tasks import backup as t
from tasks.maintenance import prune, stamp_schedule
from tasks.report import ProgressArtifact, publish_backup_report
from tenant_backup.artifact.codecs import Compression
from tenant_backup.artifact.formats import ArtifactFormat
from tenant_backup.backup.extract import TablePart
from tenant_backup.backup.steps import BackupRequest, build_manifest, error_text
from tenant_backup.db import tenant_lock
from tenant_backup.errors import ThrottledError
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.progress import Progress, publish
from tenant_backup.results import BackupResult, TenantOutcome
from tenant_backup.settings import get_settings
from tenant_backup.spool import spool_dir

__all__ = ["backup_all_tenants", "backup_tenant"]

_settings = get_settings()


def _results(futures: list[PrefectFuture[TablePart]]) -> list[TablePart]:
    """Wait for every future, then raise the first failure: a failed task never goes unnoticed,
    and no task is still writing when the caller cleans up."""
    wait(futures)
    return [f.result() for f in futures]


@flow(
    name="backup-tenant",
    flow_run_name="backup-{tenant_id}",
    description="Back up one tenant's rows from one consistent snapshot to object storage.",
    task_runner=ThreadPoolTaskRunner(max_workers=_settings.max_workers),  # type: ignore[arg-type]
)
def backup_tenant(
    tenant_id: str,
    categories: list[str] | None = None,
    format: ArtifactFormat = "csv",
    compression: Compression = "deflate",
    compression_level: int | None = None,
    schedule_id: str | None = None,
    requested_by: UUID | None = None,
    profile: str | None = "pos",
    tenant_column: str | None = None,
    backup_type: Literal["manual", "scheduled"] = "manual",
    force: bool = False,
    allow_empty: bool = False,
    name: str | None = None,
    database_block: str | None = None,
    storage_block: str | None = None,
) -> BackupResult:
    """Back up one tenant.

    Args:
        tenant_id: The tenant (établissement, company) to back up.
        categories: Categories of the profile (all when empty), or tables with a tenant column.
        format: csv (a ZIP of one CSV per table and manifest.json, opens in a spreadsheet), json
            (seed 000's document) or sql (a script for psql --single-transaction -f).
        compression: deflate (fast, default), zstd (json and sql only) or none.
        compression_level: The codec's level (deflate 0..3, zstd 1..19); empty for the fast default.
        schedule_id: The backup_schedules row that started this run (set by the schedule sync); its
            retention_jours applies, and its derniere_execution is written.
        requested_by: The app user asking; checked against the profile's admin rule. Empty for
            the operator or a schedule.
        profile: A shipped profile (pos, crm) or a profile file; empty to use tenant_column.
        tenant_column: Discover the tables holding this column instead of using a profile.
        backup_type: manual or scheduled (recorded in the ledger).
        force: Ignore the throttle (one backup per tenant per 5 minutes).
        allow_empty: Without a tenant table, back up a tenant that has no row in any table yet
            (else refused: a typo in a tenant id would give an empty backup).
        name: A name for the ledger row.
        database_block: A tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: A tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    started = time.perf_counter()
    request = BackupRequest(
        tenant_id=tenant_id,
        categories=categories or None,
        profile=profile if not tenant_column else None,
        tenant_column=tenant_column,
        requested_by=str(requested_by) if requested_by else None,
        backup_type=backup_type,
        force=force,
        allow_empty=allow_empty,
        name=name,
        format=format,
        compression=compression,
        compression_level=compression_level,
        schedule_id=schedule_id,
    )
    settings = get_settings()
    if schedule_id:
        stamp_schedule(schedule_id, settings.timezone, database_block)
    plan = t.plan_backup(request, database_block)
    expected = sum(s.est_rows for s in plan.tables)
    publish(Progress(tenant_id=tenant_id, table="", rows=0, bytes=0, expected_rows=expected))
    with (
        ProgressArtifact(tenant_id, f"Backup of {plan.tenant_name or tenant_id}: rows extracted", expected),
        # One coordinator session for the backup's life: a backup slot of the database (bounds the
        # backups at once over every process and machine), then the tenant's lock. PostgreSQL frees
        # both when the session ends, however the process ends.
        tenant_lock(
            database_url(database_block),
            tenant_id,
            lock_timeout=settings.lock_timeout,
            slots=settings.slots,
            slot_timeout=settings.slot_timeout,
            notify=get_run_logger().warning,
        ) as lock,
    ):
        backup_id = t.open_entry(plan, database_block)
        try:
            for key in t.check_storage(plan, storage_block):
                get_run_logger().info("removed %s, left by a run of tenant %s that was killed", key, tenant_id)
            with spool_dir("backup", get_settings().spool_dir) as spool:
                with lock.snapshot(plan.relations) as snapshot:
                    t.mark_started(backup_id, snapshot, database_block)
                    futures = t.extract_table.map(
                        plan.tables,
                        unmapped(request),
                        unmapped(snapshot.snapshot_id),
                        unmapped(spool),
                        unmapped(database_block),
                    )
                    parts = _results(futures)
                manifest = build_manifest(plan, backup_id, snapshot, parts)
                artifact = t.write_artifact(plan, manifest, parts, storage_block)
            t.finish_entry(backup_id, manifest, artifact, database_block)
        except BaseException as exc:
            t.fail_entry(backup_id, tenant_id, error_text(exc), database_block)
            raise
    result = BackupResult(
        backup_id=backup_id,
        tenant_id=tenant_id,
        tenant_name=plan.tenant_name,
        storage_path=artifact.storage_path,
        checksum=artifact.checksum,
        record_count=manifest.total_records,
        file_size=artifact.size,
        type=plan.type,
        categories=plan.categories,
        tables={name: table.rows for name, table in manifest.tables.items()},
        seconds=round(time.perf_counter() - started, 3),
    )
    publish_backup_report(result)
    if backup_type == "scheduled":
        _retention_after(tenant_id, database_block, storage_block)
    return result


def _retention_after(tenant_id: str, database_block: str | None, storage_block: str | None) -> None:
    """Retention runs after every scheduled backup; its failure is logged, the backup stands."""
    policy = RetentionPolicy.from_settings(get_settings())
    try:
        report = prune(policy, tenant_id, False, database_block, storage_block)
    except Exception as exc:  # noqa: BLE001 - the backup itself succeeded
        get_run_logger().warning("retention after the backup of %s failed: %s", tenant_id, error_text(exc))
        return
    for backup_id, error in report.errors.items():
        get_run_logger().warning("backup %s not deleted by retention: %s", backup_id, error)


@task(name="backup-one-tenant", task_run_name="backup-{tenant_id}")
def _backup_one(tenant_id: str, parameters: dict[str, Any], tenant_deployment: str | None) -> TenantOutcome:
    """Back up one tenant as a child flow run, in this process or, with ``tenant_deployment``, as
    a run of that deployment (on whichever worker of its pool picks it up). A failure is
    reported, not raised, so that one tenant never stops the others."""
    if tenant_deployment:
        run = cast(
            FlowRun,
            run_deployment(tenant_deployment, parameters={"tenant_id": tenant_id, **parameters}, as_subflow=True),
        )
        state = run.state
        if state is not None and state.is_completed():
            return TenantOutcome(tenant_id=tenant_id, status="completed", flow_run=run.name)
        message = (state.message if state else None) or "no final state"
        status: Literal["skipped", "failed"] = "skipped" if "ThrottledError" in message else "failed"
        return TenantOutcome(tenant_id=tenant_id, status=status, error=f"flow run {run.name}: {message}")
    try:
        result = backup_tenant(tenant_id=tenant_id, **parameters)
    except ThrottledError as exc:
        return TenantOutcome(tenant_id=tenant_id, status="skipped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported per tenant, the flow fails at the end
        return TenantOutcome(tenant_id=tenant_id, status="failed", error=error_text(exc))
    return TenantOutcome(tenant_id=tenant_id, status="completed", backup_id=result.backup_id)


@flow(
    name="backup-all-tenants",
    description="Back up every tenant, a bounded number at a time.",
    task_runner=ThreadPoolTaskRunner(max_workers=_settings.tenant_concurrency),  # type: ignore[arg-type]
)
def backup_all_tenants(
    categories: list[str] | None = None,
    profile: str | None = "pos",
    tenant_column: str | None = None,
    backup_type: Literal["manual", "scheduled"] = "scheduled",
    force: bool = False,
    format: ArtifactFormat = "csv",
    compression: Compression = "deflate",
    tenant_deployment: str | None = None,
    database_block: str | None = None,
    storage_block: str | None = None,
) -> list[TenantOutcome]:
    """Back up every tenant of the profile (TENANT_BACKUP_TENANT_CONCURRENCY at a time).

    With ``tenant_deployment`` (e.g. ``backup-tenant/on-demand``), each tenant is a run of that
    deployment, so the workers of its pool share the tenants; else they run in this process.
    The run fails when any tenant failed; throttled tenants are skipped, not failed.
    """
    profile = profile if not tenant_column else None
    tenants = t.list_tenants(profile, tenant_column, database_block)
    parameters = {
        "categories": categories,
        "profile": profile,
        "tenant_column": tenant_column,
        "backup_type": backup_type,
        "force": force,
        "format": format,
        "compression": compression,
        "database_block": database_block,
        "storage_block": storage_block,
    }
    futures = _backup_one.map(tenants, unmapped(parameters), unmapped(tenant_deployment))
    wait(futures)
    outcomes = [f.result() for f in futures]
    failed = [o for o in outcomes if o.status == "failed"]
    logger = get_run_logger()
    for o in failed:
        logger.error("tenant %s failed: %s", o.tenant_id, o.error)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(outcomes)} tenant backups failed: {', '.join(o.tenant_id for o in failed)}"
        )
    return outcomes
