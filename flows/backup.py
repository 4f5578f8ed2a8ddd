"""Backup flows: one tenant, or every tenant."""

from __future__ import annotations

import time
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger, task, unmapped
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.futures import wait
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.prefect_runner import PrefectRunner, as_task
from flows.sequences import backup as sequences
from tasks import backup as t
from tasks.report import publish_tenants_report
from tenant_backup.artifact.codecs import Compression
from tenant_backup.artifact.formats import ArtifactFormat
from tenant_backup.backup.steps import BackupRequest
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
    encrypt_to: list[str] | None = None,
    tenant_key: bool | None = None,
    kind: Literal["full", "incremental"] = "full",
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
        schedule_id: Set by the schedule sync, leave empty: the backup_schedules row that started
            this run; its retention_jours applies, and its derniere_execution is written.
        requested_by: The app user asking; checked against the profile's admin rule. Empty for
            the operator or a schedule.
        profile: A shipped profile (pos, crm) or a profile file; empty to use tenant_column.
        tenant_column: Discover the tables holding this column instead of using a profile.
        backup_type: manual or scheduled (recorded in the ledger).
        force: Ignore the throttle (one backup per tenant per 5 minutes).
        allow_empty: Without a tenant table, back up a tenant that has no row in any table yet
            (else refused: a typo in a tenant id would give an empty backup).
        name: A name for the ledger row.
        encrypt_to: age recipients (public keys, age1…) to encrypt the artifact to; empty for
            TENANT_BACKUP_RECIPIENTS (none set: not encrypted). Restores need a matching identity.
        tenant_key: Encrypt to the tenant's own key instead, kept wrapped to encrypt_to, so that
            erase-tenant makes every copy unreadable; empty for TENANT_BACKUP_TENANT_KEYS.
        kind: full, or incremental: only the changes since the tenant's newest backup (csv only); a
            full one starts a new chain when the chain is older than TENANT_BACKUP_CHAIN_DAYS.
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
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
        encrypt_to=encrypt_to,
        tenant_key=tenant_key,
        kind=kind,
    )
    return sequences.backup_tenant(PrefectRunner(), request, database_block, storage_block)


@task(name="backup-one-tenant", task_run_name="backup-{tenant_id}")
def _backup_on_pool(tenant_id: str, parameters: dict[str, Any], tenant_deployment: str) -> TenantOutcome:
    """Back up one tenant as a run of ``tenant_deployment``, on whichever worker of its pool picks
    it up. A failure is reported, not raised, so that one tenant never stops the others."""
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


def _all_tenants_run_name() -> str:
    """``backup-all-tenants-pos``: the profile (or tenant column) the run covers."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return f"backup-all-tenants-{parameters.get('tenant_column') or parameters.get('profile') or 'pos'}"


@flow(
    name="backup-all-tenants",
    flow_run_name=_all_tenants_run_name,
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
    compression_level: int | None = None,
    encrypt_to: list[str] | None = None,
    tenant_key: bool | None = None,
    kind: Literal["full", "incremental"] = "full",
    tenant_deployment: str | None = None,
    database_block: str | None = None,
    storage_block: str | None = None,
) -> list[TenantOutcome] | State[Any]:
    """Back up every tenant of the profile, TENANT_BACKUP_TENANT_CONCURRENCY at a time: each tenant
    is one task run (backup-<tenant>) whose tables are extracted inside it, and the run leaves one
    summary artifact. With ``tenant_deployment`` (e.g. ``backup-tenant/backup-now``), each tenant is
    a run of that deployment instead, so that the workers of its pool share the tenants.
    The run fails when any tenant failed (its result still lists every tenant's outcome);
    throttled tenants are skipped, not failed.

    Args:
        categories: Categories of the profile to back up (default: all, a full backup).
        profile: A shipped profile (pos, crm) or a profile file; ignored with tenant_column.
        tenant_column: Instead of a profile, discover the tables holding this column.
        backup_type: scheduled or manual, as the ledger records it.
        force: Ignore the one-backup-per-5-minutes throttle.
        format: csv (ZIP of CSV files), json (seed 000's document) or sql (a psql script).
        compression: deflate, zstd or none.
        compression_level: The codec's level (deflate 0..3, zstd 1..19); empty for the fast default.
        encrypt_to: age recipients (age1…) of every artifact; empty for TENANT_BACKUP_RECIPIENTS.
        tenant_key: Encrypt each tenant to its own key, wrapped to encrypt_to (TENANT_BACKUP_TENANT_KEYS).
        kind: full, or incremental (the changes since each tenant's newest backup; a weekly full
            with TENANT_BACKUP_CHAIN_DAYS=7).
        tenant_deployment: Advanced: run each tenant as a run of this deployment
            (backup-tenant/backup-now) so that a work pool's workers share them.
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    started = time.perf_counter()
    profile = profile if not tenant_column else None
    found = as_task(t.list_tenants)(profile, tenant_column, database_block)
    parameters: dict[str, Any] = {
        "categories": categories,
        "profile": profile,
        "tenant_column": tenant_column,
        "backup_type": backup_type,
        "force": force,
        "format": format,
        "compression": compression,
        "compression_level": compression_level,
        "encrypt_to": encrypt_to,
        "tenant_key": tenant_key,
        "kind": kind,
    }
    if tenant_deployment:
        blocks = {"database_block": database_block, "storage_block": storage_block}
        futures = _backup_on_pool.map(
            [tenant.id for tenant in found.tenants], unmapped({**parameters, **blocks}), unmapped(tenant_deployment)
        )
        wait(futures)
        outcomes = [f.result() for f in futures] + sequences.unlisted_outcomes(PrefectRunner(), found.unlisted)
    else:
        outcomes = sequences.backup_tenants(
            PrefectRunner(), found, parameters, database_block, storage_block, _settings.tenant_concurrency
        )
    publish_tenants_report(outcomes, time.perf_counter() - started)
    failed = [o for o in outcomes if o.status == "failed"]
    logger = get_run_logger()
    for o in failed:
        logger.error("tenant %s failed: %s", o.tenant_id, o.error)
    if failed:
        names = ", ".join(o.tenant_id for o in failed[:20]) + (", …" if len(failed) > 20 else "")
        return Failed(message=f"{len(failed)} of {len(outcomes)} tenant backups failed: {names}", data=outcomes)
    return outcomes
