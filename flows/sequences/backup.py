"""The backup of one tenant, as one sequence of steps, and of many tenants, each one that sequence
(run by a runner: see flows/runner.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from blocks import database_url
from flows.runner import Runner
from tasks import backup as t
from tasks.maintenance import prune, stamp_schedule
from tasks.report import publish_backup_report
from tenant_backup.backup.manifests import build_manifest
from tenant_backup.backup.steps import BackupPlan, BackupRequest, error_text
from tenant_backup.errors import ThrottledError
from tenant_backup.locks import tenant_lock
from tenant_backup.naming import tenant_label, tenant_tags
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.progress import Progress, publish
from tenant_backup.results import BackupResult, TenantOutcome
from tenant_backup.sessions import reuse_sessions
from tenant_backup.settings import get_settings
from tenant_backup.spool import spool_dir
from tenant_backup.tenancy.tenants import Tenant, TenantList, Unlisted

__all__ = ["backup_tenant", "backup_tenants", "unlisted_outcomes"]


def backup_tenant(
    run: Runner,
    request: BackupRequest,
    database_block: str | None,
    storage_block: str | None,
    plan: BackupPlan | None = None,
) -> BackupResult:
    """Plan (unless the caller has the ``plan`` already), then inside one snapshot extract every
    table at once, assemble and store the artifact, and record it in the ledger; a failure marks
    the ledger row failed and leaves no artifact."""
    started = time.perf_counter()
    settings = get_settings()
    if request.schedule_id:
        run(stamp_schedule, request.schedule_id, settings.timezone, database_block)
    plan = plan or run(t.plan_backup, request, database_block)
    request = plan.request  # the tenant id as the database spells it
    tenant_id = request.tenant_id
    run.label(
        f"backup-{tenant_label(tenant_id, plan.tenant_name)}",
        [
            *tenant_tags(tenant_id, plan.tenant_name),
            f"format:{request.format}",
            f"type:{'incremental' if plan.incremental else plan.type}",
            request.backup_type,
        ],
    )
    expected = sum(s.est_rows for s in plan.tables)
    publish(Progress(tenant_id=tenant_id, table="", rows=0, bytes=0, expected_rows=expected))
    with (
        run.progress(tenant_id, f"Backup of {plan.tenant_name or tenant_id}: rows extracted", expected),
        # One coordinator session for the backup's life: a backup slot of the database (bounds the
        # backups at once over every process and machine), then the tenant's lock. PostgreSQL frees
        # both when the session ends, however the process ends.
        tenant_lock(
            database_url(database_block),
            tenant_id,
            lock_timeout=settings.lock_timeout,
            slots=settings.slots,
            slot_timeout=settings.slot_timeout,
            notify=run.warn if run.own_log else None,  # the CLI prints tenant_backup's logger already
        ) as lock,
    ):
        entry = run(t.open_entry, plan, run.flow_run_id, database_block)
        run.crashed(entry.reaped_runs, tenant_id, "backup")
        backup_id = entry.backup_id
        try:
            for key in run(t.check_storage, plan, storage_block):
                run.log(f"removed {key}, left by a run of tenant {tenant_id} that was killed")
            with spool_dir("backup", settings.spool_dir) as spool:
                with lock.snapshot(plan.relations) as snapshot, reuse_sessions():
                    run(t.mark_started, backup_id, snapshot, database_block)
                    parts = run.map(
                        t.extract_table,
                        plan.tables,
                        request,
                        plan.chain,
                        snapshot.snapshot_id,
                        str(spool),
                        database_block,
                    )
                manifest = build_manifest(plan, backup_id, snapshot, parts)
                artifact = run(t.write_artifact, plan, manifest, parts, storage_block)
                run(t.finish_entry, backup_id, manifest, artifact, plan, parts, database_block)
        except BaseException as exc:
            run(t.fail_entry, backup_id, tenant_id, error_text(exc), database_block)
            raise
    result = BackupResult(
        backup_id=backup_id,
        tenant_id=tenant_id,
        tenant_name=plan.tenant_name,
        storage_path=artifact.storage_path,
        checksum=artifact.checksum,
        record_count=manifest.total_records,
        file_size=artifact.size,
        type="incremental" if plan.incremental else plan.type,
        categories=plan.categories,
        tables={name: table.rows for name, table in manifest.tables.items()},
        seconds=round(time.perf_counter() - started, 3),
        left_out=plan.left_out,
        encrypted_to=artifact.encrypted_to,
        parent_id=manifest.parent_id,
        chain_note=plan.chain.reason if plan.chain and not plan.chain.parent else None,
    )
    if plan.left_out:
        run.warn(
            f"backup {backup_id} of tenant {tenant_id} leaves out tables that hold {plan.tenant_column}: "
            f"{', '.join(plan.left_out)} (add them to a category of the profile, and their schema to its "
            "other_schemas; with --tenant-column, write a profile file for them: --profile app.toml)"
        )
    if result.chain_note:
        run.log(f"backup {backup_id} of tenant {tenant_id} is a full one that starts a chain: {result.chain_note}")
    run.log(
        f"backup {backup_id} of tenant {tenant_id} completed: {result.record_count:,} rows in {len(result.tables)} "
        f"tables, {result.file_size:,} bytes, {result.seconds:.2f} s"
    )
    run.report(publish_backup_report, result)
    if request.backup_type == "scheduled":
        _retention_after(run, tenant_id, database_block, storage_block)
    return result


def backup_tenants(
    run: Runner,
    found: TenantList,
    parameters: dict[str, Any],
    database_block: str | None,
    storage_block: str | None,
    concurrency: int,
) -> list[TenantOutcome]:
    """Back up every tenant with ``parameters`` (a :class:`BackupRequest`'s fields but the tenant),
    ``concurrency`` at once, each as one unit (``backup-<tenant>``) whose tables fan out inside it;
    the database sessions are lent from tenant to tenant. A tenant's failure is its outcome and
    never stops the others; a throttled tenant is skipped. The ids that rows hold but the tenant
    table lacks are failed outcomes too: no backup holds their rows (see :func:`unlisted_outcomes`)."""

    def one(sub: Runner, tenant: Tenant) -> TenantOutcome:
        outcome = TenantOutcome(tenant_id=tenant.id, tenant_name=tenant.name, status="failed")
        try:
            result = backup_tenant(sub, BackupRequest(tenant_id=tenant.id, **parameters), database_block, storage_block)
        except ThrottledError as exc:
            return outcome.model_copy(update={"status": "skipped", "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - reported per tenant; the run fails at the end
            sub.warn(f"backup of tenant {tenant.id} failed: {error_text(exc)}")
            return outcome.model_copy(update={"error": error_text(exc)})
        return outcome.model_copy(
            update={
                "status": "completed",
                "backup_id": result.backup_id,
                "record_count": result.record_count,
                "file_size": result.file_size,
                "seconds": result.seconds,
            }
        )

    with reuse_sessions():
        outcomes = run.each(
            "backup-tenant",
            found.tenants,
            lambda t: f"backup-{tenant_label(t.id, t.name)}",
            one,
            concurrency,
            failure=lambda outcome: outcome.error if outcome.status == "failed" else None,
        )
    return outcomes + unlisted_outcomes(run, found.unlisted)


def unlisted_outcomes(run: Runner, unlisted: Sequence[Unlisted]) -> list[TenantOutcome]:
    """A failed outcome for each tenant id that rows hold but the tenant table lacks: a run of
    every tenant that left those rows in no backup must not call itself complete."""
    if run.own_log:  # a Prefect run's log; the CLI lists them itself
        for u in unlisted:
            run.warn(u.reason())
    return [TenantOutcome(tenant_id=u.id, status="failed", error=u.reason(), unlisted=True) for u in unlisted]


def _retention_after(run: Runner, tenant_id: str, database_block: str | None, storage_block: str | None) -> None:
    """Retention runs after every scheduled backup; its failure is logged, the backup stands."""
    policy = RetentionPolicy.from_settings(get_settings())
    try:
        report = run(prune, policy, tenant_id, False, database_block, storage_block)
    except Exception as exc:  # noqa: BLE001 - the backup itself succeeded
        run.warn(f"retention after the backup of {tenant_id} failed: {error_text(exc)}")
        return
    for backup_id, error in report.errors.items():
        run.warn(f"backup {backup_id} not deleted by retention: {error}")
