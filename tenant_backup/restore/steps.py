"""The steps of a restore as plain functions; ``tasks/restore.py`` wraps each as a Prefect task.

check the request (typed confirmation, ledger row, admin rule) -> fetch and verify the artifact
-> plan (rolled back) -> [approval] -> apply (one transaction) -> log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tenant_backup import ledger
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.artifact.reader import Artifact, fetch_artifact
from tenant_backup.db import connect
from tenant_backup.errors import LedgerError, RestoreRefusedError, VerificationError
from tenant_backup.restore.engine import RestorePlan, restore_tenant
from tenant_backup.results import RestoreResult, TableCounts
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.profiles import stored_profile

__all__ = [
    "RestoreRequest",
    "RestoreTarget",
    "VerifiedArtifact",
    "check_request",
    "log_restore",
    "result_of",
    "run",
    "verify",
]

CONFIRMATION = "RESTORE"


class RestoreRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    backup_id: str
    confirm: str | None
    requested_by: str | None = None
    mode: Literal["replace", "merge"] = "replace"
    dry_run: bool = False
    tables: list[str] | None = None
    target_tenant: str | None = None


class RestoreTarget(BaseModel):
    """The ledger's word on the backup, and the tenant the rows go to."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    source_tenant: str
    tenant_id: str
    storage_path: str
    checksum: str | None


class VerifiedArtifact(BaseModel):
    """A local copy of the artifact that passed every check, and its manifest."""

    path: str
    manifest: Manifest

    def open(self) -> Artifact:
        return Artifact(Path(self.path), self.manifest)


def check_request(db_url: str, settings: Settings, req: RestoreRequest) -> RestoreTarget:
    """Refuse before anything else: no typed confirmation, no such backup, not completed,
    or a requester who is not an admin of the target tenant (logged)."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        row = ledger.get_backup(conn, settings.ledger_schema, req.backup_id)
        target = req.target_tenant or row.tenant_id
        try:
            if req.confirm != CONFIRMATION and not req.dry_run:
                raise RestoreRefusedError(
                    f"restore of backup {req.backup_id} not confirmed: pass confirm={CONFIRMATION!r} to overwrite "
                    f"tenant {target}'s rows",
                    backup_id=req.backup_id,
                    tenant_id=target,
                )
            if row.status != "completed" or not row.storage_path:
                raise LedgerError(
                    f"backup {req.backup_id} is {row.status}, not completed: it cannot be restored; "
                    "pick a completed one (tenant-backup list)",
                    backup_id=req.backup_id,
                )
            if req.requested_by:
                profile = stored_profile(row.metadata.get("profile_doc"), row.tenant_column)
                check_admin(conn, profile, target, req.requested_by, "restore")
        except Exception as exc:
            ledger.log_action(
                conn,
                settings.ledger_schema,
                action="restore",
                result="failed",
                tenant_id=target,
                backup_id=req.backup_id,
                performed_by=req.requested_by,
                error=str(exc),
                details={"mode": req.mode, "dry_run": req.dry_run},
            )
            raise
    return RestoreTarget(
        backup_id=req.backup_id,
        source_tenant=row.tenant_id,
        tenant_id=target,
        storage_path=row.storage_path,
        checksum=row.checksum,
    )


def verify(storage: Storage, target: RestoreTarget, spool: Path) -> VerifiedArtifact:
    """Download and verify the artifact; refuse another tenant's artifact."""
    artifact = fetch_artifact(
        storage, target.storage_path, target.checksum, spool / "artifact", backup_id=target.backup_id
    )
    manifest = artifact.manifest
    if manifest.backup_id != target.backup_id or manifest.tenant_id != target.source_tenant:
        raise VerificationError(
            f"the artifact at {target.storage_path} belongs to backup {manifest.backup_id} of tenant "
            f"{manifest.tenant_id}, not to backup {target.backup_id} of tenant {target.source_tenant}; "
            "it was replaced in storage: restore another backup",
            backup_id=target.backup_id,
            tenant_id=target.source_tenant,
        )
    return VerifiedArtifact(path=str(artifact.path), manifest=manifest)


def run(
    db_url: str,
    settings: Settings,
    req: RestoreRequest,
    target: RestoreTarget,
    artifact: VerifiedArtifact,
    *,
    apply: bool,
) -> RestorePlan:
    """Plan (apply=False, rolled back) or apply the restore in one transaction."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        return restore_tenant(
            conn,
            artifact.open(),
            backup_id=target.backup_id,
            target_tenant=target.tenant_id,
            mode=req.mode,
            tables=req.tables,
            apply=apply,
            lock_timeout=settings.lock_timeout,
            work_mem=settings.work_mem,
        )


def log_restore(
    db_url: str,
    settings: Settings,
    req: RestoreRequest,
    tenant_id: str | None,
    *,
    plan: RestorePlan | None,
    error: str | None,
    seconds: float,
    action: str = "restore",
) -> None:
    """One ``backup_restore_logs`` row: who, which backup, mode, counts, duration, result."""
    details: dict[str, Any] = {"mode": req.mode, "dry_run": req.dry_run, "seconds": round(seconds, 3)}
    if req.tables:
        details["tables_requested"] = req.tables
    if plan is not None:
        details["tables"] = {t.table: t.model_dump(exclude={"table"}) for t in plan.tables}
        details["applied"] = plan.applied
        details["triggers"] = plan.triggers
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.log_action(
            conn,
            settings.ledger_schema,
            action=action,
            result="failed" if error else "success",
            tenant_id=tenant_id,
            backup_id=req.backup_id,
            performed_by=req.requested_by,
            error=error,
            details=details,
        )


def result_of(
    plan: RestorePlan, seconds: float, status: Literal["completed", "planned", "verified"] | None = None
) -> RestoreResult:
    """What the restore flow returns: the plan's counts per table, and how long it took."""
    return RestoreResult(
        status=status or ("completed" if plan.applied else "planned"),
        backup_id=plan.backup_id,
        tenant_id=plan.tenant_id,
        source_tenant=plan.source_tenant,
        mode=plan.mode,
        applied=plan.applied,
        tables={
            t.table: TableCounts(
                rows=t.rows, inserted=t.inserted, updated=t.updated, deleted=t.deleted, matched_by=t.matched_by
            )
            for t in plan.tables
        },
        outside=[o.model_dump() for o in plan.outside],
        missing_references=[m.model_dump() for m in plan.missing_references],
        dropped_columns=plan.dropped_columns,
        added_columns=plan.added_columns,
        triggers=plan.triggers,
        seconds=round(seconds, 3),
    )
