"""Knowing, without looking, that every tenant has a recent backup that really restores: scheduled
verification of the newest backups, and the freshness check (see flows/runner.py)."""

from __future__ import annotations

from flows.runner import Runner
from flows.sequences.restore import verify_backup
from tasks import watch as t
from tasks.report import publish_freshness_report, publish_verification_report
from tenant_backup.backup.steps import error_text
from tenant_backup.errors import TenantsFailedError
from tenant_backup.ledger import BackupRow
from tenant_backup.naming import tenant_label
from tenant_backup.operations.freshness import TenantStatus
from tenant_backup.results import TenantOutcome

__all__ = ["check_freshness", "verify_backups"]


def verify_backups(
    run: Runner, sample: int | None, concurrency: int, database_block: str | None, storage_block: str | None
) -> list[TenantOutcome]:
    """Verify each tenant's newest backup (download, hashes, a rolled-back restore), or a rotating
    sample of them; each verdict goes to the ledger. Fails, naming them, when any failed."""
    rows = run(t.newest_backups, sample, database_block)

    def one(sub: Runner, row: BackupRow) -> TenantOutcome:
        outcome = TenantOutcome(tenant_id=row.tenant_id, tenant_name=row.metadata.get("tenant_name"), status="failed")
        try:
            result = verify_backup(sub, row.id, database_block, storage_block)
        except Exception as exc:  # noqa: BLE001 - recorded per backup; the run fails at the end
            return outcome.model_copy(update={"backup_id": row.id, "error": error_text(exc)})
        return outcome.model_copy(update={"status": "completed", "backup_id": row.id, "seconds": result.seconds})

    outcomes = run.each(
        "verify-backup",
        rows,
        lambda r: f"verify-{tenant_label(r.tenant_id, r.metadata.get('tenant_name'))}",
        one,
        concurrency,
        failure=lambda o: o.error if o.status == "failed" else None,
    )
    run.report(publish_verification_report, outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise TenantsFailedError(
            f"{len(failed)} of {len(outcomes)} verifications failed: "
            + "; ".join(f"backup {o.backup_id} of tenant {o.tenant_id}: {o.error}" for o in failed[:5]),
            output={"outcomes": [o.model_dump(mode="json") for o in outcomes]},
        )
    return outcomes


def check_freshness(
    run: Runner, profile: str | None, tenant_column: str | None, database_block: str | None
) -> list[TenantStatus]:
    """Every tenant's status; fails, naming them, when a tenant is stale, never backed up, or its
    last backup or verification failed (a Prefect automation on the failed run notifies)."""
    found = run(t.statuses, profile, tenant_column, database_block)
    run.report(publish_freshness_report, found)
    attention = [s for s in found if s.state != "ok"]
    if attention:
        raise TenantsFailedError(
            f"{len(attention)} of {len(found)} tenants need attention: "
            + "; ".join(f"{s.tenant_id} {s.state}: {s.reason}" for s in attention[:5]),
            output={"tenants": [{**s.model_dump(mode="json"), "reason": s.reason} for s in found]},
        )
    return found
