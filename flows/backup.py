"""Backup flows: one tenant, or every tenant."""

from __future__ import annotations

from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger, task, unmapped
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.prefect_runner import PrefectRunner, as_task
from flows.sequences import backup as sequences
from tasks import backup as t
from tenant_backup.artifact.codecs import Compression
from tenant_backup.artifact.formats import ArtifactFormat
from tenant_backup.backup.steps import BackupRequest, error_text
from tenant_backup.errors import ThrottledError
from tenant_backup.results import BackupResult, TenantOutcome
from tenant_backup.settings import get_settings

__all__ = ["backup_all_tenants", "backup_tenant"]

_settings = get_settings()


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
    request = BackupRequest(
        tenant_id=tenant_id,
        categories=categories,
        profile=profile,
        tenant_column=tenant_column,
        requested_by=requested_by,
        backup_type=backup_type,
        force=force,
        allow_empty=allow_empty,
        name=name,
        format=format,
        compression=compression,
        compression_level=compression_level,
        schedule_id=schedule_id,
    )
    return sequences.backup_tenant(PrefectRunner(), request, database_block, storage_block)


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

    With ``tenant_deployment`` (e.g. ``backup-tenant/backup-now``), each tenant is a run of that
    deployment, so the workers of its pool share the tenants; else they run in this process.
    The run fails when any tenant failed; throttled tenants are skipped, not failed.
    """
    profile = profile if not tenant_column else None
    tenants = as_task(t.list_tenants)(profile, tenant_column, database_block)
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
