"""Restore and verify flows."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from prefect import flow
from prefect.states import Cancelled

from flows.approval import RestoreApproval, answer_approval
from flows.prefect_runner import PrefectRunner
from flows.sequences import restore as sequences
from flows.sequences.restore import ApprovalRequest
from tenant_backup.errors import ApprovalRejectedError
from tenant_backup.restore.steps import RestoreRequest
from tenant_backup.results import RestoreResult

__all__ = ["RestoreApproval", "answer_approval", "restore_backup", "verify_backup"]


@flow(
    name="restore-backup",
    flow_run_name="restore-{backup_id}",
    description="Restore one tenant's rows from a verified backup, in one transaction, after approval.",
)
def restore_backup(
    backup_id: UUID | None = None,
    confirm: str | None = None,
    requested_by: UUID | None = None,
    mode: Literal["replace", "merge"] = "replace",
    dry_run: bool = False,
    tables: list[str] | None = None,
    require_approval: bool = False,
    target_tenant: str | None = None,
    approval_timeout_seconds: int = 3600,
    approval_poll_seconds: int = 10,
    file: str | None = None,
    cascade: bool = False,
    database_block: str | None = None,
    storage_block: str | None = None,
) -> RestoreResult:
    """Restore a backup.

    Args:
        backup_id: The backup to restore (tenant-backup list).
        confirm: Type RESTORE to confirm (not needed for a dry run).
        requested_by: The app user asking; must be an admin of the tenant under the profile's rule.
        mode: replace: the tenant's rows become exactly the backup's; merge: insert missing rows and
            update changed ones, delete nothing.
        dry_run: Verify and plan only: count what would change, write nothing.
        tables: Restore only these tables of the backup.
        require_approval: Pause with the plan until someone approves it in the Prefect UI.
        target_tenant: Restore into another tenant (refused unless given).
        approval_timeout_seconds: How long to wait for approval before giving up (nothing changed).
        approval_poll_seconds: Advanced: how often the paused run checks for an answer.
        file: Instead of a backup of this ledger, an artifact file (a path or a storage URL), verified
            by its manifest's checksums.
        cascade: Let the ON DELETE rules of tables outside the restore act on rows that reference
            deleted rows (else such a restore is refused; the plan lists those rows).
        database_block: Advanced, usually empty: a tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: Advanced, usually empty: a tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    req = RestoreRequest(
        backup_id=backup_id,
        confirm=confirm,
        requested_by=requested_by,
        mode=mode,
        dry_run=dry_run,
        tables=tables,
        target_tenant=target_tenant,
        file=file,
        cascade=cascade,
    )
    approval = ApprovalRequest(require_approval, approval_timeout_seconds, approval_poll_seconds)
    try:
        return sequences.restore_backup(PrefectRunner(), req, approval, database_block, storage_block)
    except ApprovalRejectedError as exc:
        # A "no" is an answer, not a failure: the run ends Cancelled (not red on the dashboards),
        # with the answer as its message; its log row says who said no and why.
        return Cancelled(message=str(exc))  # type: ignore[return-value]


@flow(
    name="verify-backup",
    flow_run_name="verify-{backup_id}",
    description="Check a backup without restoring it: checksums, manifest, and a rolled-back test restore.",
)
def verify_backup(
    backup_id: UUID, database_block: str | None = None, storage_block: str | None = None
) -> RestoreResult:
    """Verify a backup: download it, check its checksum against the ledger and every table's sha256
    against its manifest, then stage it in the database and plan a restore, rolled back."""
    return sequences.verify_backup(PrefectRunner(), str(backup_id), database_block, storage_block)
