"""Watch flows: scheduled test restores of the newest backups, and the freshness check that fails
(so that a Prefect automation notifies) when a tenant lacks a recent, restorable backup."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.prefect_runner import PrefectRunner
from flows.sequences import watch as sequences
from tenant_backup.operations.freshness import TenantStatus
from tenant_backup.results import TenantOutcome
from tenant_backup.settings import get_settings

__all__ = ["check_freshness", "verify_backups"]

_settings = get_settings()


@flow(
    name="verify-backups",
    description="Verify each tenant's newest backup (download, hashes, a rolled-back restore), or a rotating sample.",
    task_runner=ThreadPoolTaskRunner(max_workers=_settings.tenant_concurrency),  # type: ignore[arg-type]
)
def verify_backups(
    sample: int | None = None, database_block: str | None = None, storage_block: str | None = None
) -> list[TenantOutcome]:
    """Verify the newest backup of every tenant, or of ``sample`` tenants per run, those verified
    longest ago first (a rotation). Each verdict is recorded on the backup (list and status show it);
    the run fails, naming them, when any verification failed.

    Args:
        sample: How many tenants per run (empty: all).
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    return sequences.verify_backups(
        PrefectRunner(), sample, _settings.tenant_concurrency, database_block, storage_block
    )


@flow(
    name="check-freshness",
    description="Every tenant's newest backup against its schedule, its verification, its last failure; "
    "fails when one needs attention.",
)
def check_freshness(
    profile: str | None = None, tenant_column: str | None = None, database_block: str | None = None
) -> list[TenantStatus]:
    """Fail when a tenant is stale (its newest backup older than its schedule promises), was never
    backed up, or its last backup or verification failed; the report artifact lists every tenant.

    Args:
        profile: With a profile (pos, crm), the app's tenants that were never backed up count too.
        tenant_column: Instead of a profile, the column that holds the tenant id.
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
    """
    return sequences.check_freshness(PrefectRunner(), profile, tenant_column, database_block)
