"""Tasks of the restore and verify flows."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from blocks import database_url, open_storage
from tenant_backup.restore import steps
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.restore.steps import RestoreRequest, RestoreTarget, VerifiedArtifact
from tenant_backup.settings import get_settings

__all__ = ["apply_restore", "check_restore", "fetch_and_verify", "log_restore", "plan_restore"]


@task(name="check-restore-request")
def check_restore(req: RestoreRequest, database_block: str | None) -> RestoreTarget:
    """Typed confirmation, a completed backup, an admin requester."""
    return steps.check_request(database_url(database_block), get_settings(), req)


@task(name="fetch-and-verify")
def fetch_and_verify(target: RestoreTarget, spool: str, storage_block: str | None) -> VerifiedArtifact:
    """Download the artifact; check its checksum, manifest version, tenant and every table's sha256."""
    return steps.verify(open_storage(storage_block), target, Path(spool))


@task(name="plan-restore")
def plan_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, database_block: str | None
) -> RestorePlan:
    """Stage the backup and count what would change, then roll back: nothing is written."""
    return steps.run(database_url(database_block), get_settings(), req, target, artifact, apply=False)


@task(name="apply-restore")
def apply_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, database_block: str | None
) -> RestorePlan:
    """Restore in one transaction, checked before commit."""
    return steps.run(database_url(database_block), get_settings(), req, target, artifact, apply=True)


@task(name="log-restore")
def log_restore(
    req: RestoreRequest,
    tenant_id: str | None,
    plan: RestorePlan | None,
    error: str | None,
    seconds: float,
    database_block: str | None,
    action: str = "restore",
) -> None:
    steps.log_restore(
        database_url(database_block),
        get_settings(),
        req,
        tenant_id,
        plan=plan,
        error=error,
        seconds=seconds,
        action=action,
    )
