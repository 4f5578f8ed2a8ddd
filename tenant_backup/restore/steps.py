"""The steps of a restore as plain functions; ``tasks/restore.py`` wraps each as a Prefect task.

check the request (typed confirmation, ledger row, admin rule) -> fetch and verify the artifact
-> plan (rolled back) -> [approval] -> apply (one transaction) -> log.

A run writes one ``backup_restore_logs`` row, named by its :class:`RunLog`: a refusal writes it
failed; an apply writes it ``running`` first, under the tenant's lock, and settles it inside the
restore's transaction; any other outcome writes it at the end (:func:`log_restore`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenant_backup import ledger
from tenant_backup.backup.steps import error_text
from tenant_backup.db import connect
from tenant_backup.errors import ConfigurationError, LedgerError, RestoreRefusedError
from tenant_backup.ledger import chains, keys
from tenant_backup.locks import tenant_lock
from tenant_backup.restore import CONFIRMATION
from tenant_backup.restore.engine import RestorePlan, restore_tenant
from tenant_backup.restore.fetch import Link, RestoreTarget, VerifiedArtifact, fetch_file, verify
from tenant_backup.restore.identities import tenant_key_of
from tenant_backup.results import Approval, RestoreResult, TableCounts
from tenant_backup.settings import Settings
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.catalog import read_catalog
from tenant_backup.tenancy.profiles import Profile, stored_profile
from tenant_backup.tenancy.tenants import check_tenant

__all__ = [
    "AppliedRestore",
    "RestoreRequest",
    "RestoreTarget",
    "RunLog",
    "VerifiedArtifact",
    "apply_restore",
    "check_file",
    "check_request",
    "fetch_file",
    "log_restore",
    "plan_restore",
    "require_confirmation",
    "result_of",
    "verify",
]


class RestoreRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    backup_id: str | None = None
    confirm: str | None
    requested_by: str | None = None
    mode: Literal["replace", "merge"] = "replace"
    dry_run: bool = False
    tables: list[str] | None = None
    target_tenant: str | None = None
    file: str | None = None  # an artifact that is not in this ledger: a local path or a storage URL
    cascade: bool = False  # let ON DELETE rules change rows of tables outside the restore

    @field_validator("requested_by", "backup_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if value else None

    @field_validator("tables", mode="before")
    @classmethod
    def _no_empty_tables(cls, value: Any) -> Any:
        return value or None


class RunLog(BaseModel):
    """The ``backup_restore_logs`` row of one restore or verify run: its id, the Prefect flow run
    (recorded so that a run that died can be marked crashed), and when the run started."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    action: Literal["restore", "verify"] = "restore"
    flow_run_id: str | None = None
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    approval: Approval | None = None  # the approver's answer, once given

    @property
    def seconds(self) -> float:
        """How long the run has worked: since it started, less the wait for an approval."""
        waited = self.approval.waited_seconds if self.approval else 0.0
        return round((datetime.now(UTC) - self.started_at).total_seconds() - waited, 3)


class AppliedRestore(BaseModel):
    """An applied restore's plan, and the Prefect flow runs of the stale rows reaped before it."""

    plan: RestorePlan
    reaped_runs: list[str] = []


def require_confirmation(req: RestoreRequest, backup_id: str, target: str) -> None:
    if req.confirm != CONFIRMATION and not req.dry_run:
        raise RestoreRefusedError(
            f"restore of backup {backup_id} not confirmed: it overwrites tenant {target}'s rows; pass "
            f"--confirm {CONFIRMATION} (confirm: {CONFIRMATION!r} through the API), or --dry-run to see the "
            "plan first",
            backup_id=backup_id,
            tenant_id=target,
        )


def _spelled(conn: psycopg.Connection, profile: Profile, tenant_id: str) -> str:
    """Another tenant to restore into, as the database spells its id; it must exist."""
    catalog = read_catalog(conn, profile.db_schema, profile.schemas)
    return check_tenant(conn, catalog, profile, tenant_id, allow_empty=True).id


def check_request(db_url: str, settings: Settings, req: RestoreRequest, log: RunLog) -> RestoreTarget:
    """Refuse before anything else: no typed confirmation, no such backup, not completed,
    or a requester who is not an admin of the target tenant (logged)."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        if req.backup_id is None:
            raise ConfigurationError("no backup to restore: give its id, or a file (--file)")
        row = ledger.get_backup(conn, settings.ledger_schema, req.backup_id)
        target = req.target_tenant or row.tenant_id
        profile = stored_profile(row.metadata.get("profile_doc"), row.tenant_column)
        try:
            if req.target_tenant:
                target = _spelled(conn, profile, req.target_tenant)
            require_confirmation(req, req.backup_id or "", target)
            if row.status != "completed" or not row.storage_path:
                raise LedgerError(
                    f"backup {req.backup_id} is {row.status}, not completed: it cannot be restored; "
                    "pick a completed one (tenant-backup list)",
                    backup_id=req.backup_id,
                )
            if req.requested_by:
                check_admin(conn, profile, target, req.requested_by, "restore")
            keys.refuse_erased(conn, settings.ledger_schema, target, "restored into")
            key = tenant_key_of(conn, settings.ledger_schema, row.tenant_id, row.encrypted_to, req.backup_id)
            chain = _chain(conn, settings, row) if row.parent_id else []
        except Exception as exc:
            _log(conn, settings, req, target, log, "failed", error=str(exc))
            raise
    return RestoreTarget(
        backup_id=req.backup_id,
        source_tenant=row.tenant_id,
        tenant_id=target,
        storage_path=row.storage_path,
        checksum=row.checksum,
        encrypted_to=row.encrypted_to,
        tenant_key=key,
        chain=chain,
    )


def _chain(conn: psycopg.Connection, settings: Settings, row: ledger.BackupRow) -> list[Link]:
    """An incremental's ancestors, base first; each must be completed and in storage."""
    links = chains.ancestors(conn, settings.ledger_schema, row.id)[:-1]
    for link in links:
        if link.status != "completed" or not link.storage_path:
            raise LedgerError(
                f"backup {row.id} is incremental and needs backup {link.id} of its chain, which is {link.status}: "
                "the chain cannot be restored; restore a full backup (tenant-backup list)",
                backup_id=row.id,
            )
    return [
        Link(backup_id=r.id, storage_path=r.storage_path or "", checksum=r.checksum, encrypted_to=r.encrypted_to)
        for r in links
    ]


def check_file(
    db_url: str, settings: Settings, req: RestoreRequest, artifact: VerifiedArtifact, log: RunLog
) -> RestoreTarget:
    """The checks of :func:`check_request` for an artifact from ``--file``, with its manifest as the
    ledger's word: typed confirmation, and the admin rule of the profile it was taken with."""
    manifest = artifact.manifest
    target = req.target_tenant or manifest.tenant_id
    profile = stored_profile(manifest.profile_doc, manifest.tenant_column, manifest.db_schema)
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        try:
            if req.target_tenant:
                target = _spelled(conn, profile, req.target_tenant)
            require_confirmation(req, manifest.backup_id, target)
            if req.requested_by:
                check_admin(conn, profile, target, req.requested_by, "restore")
            keys.refuse_erased(conn, settings.ledger_schema, target, "restored into")
        except Exception as exc:
            _log(conn, settings, req, target, log, "failed", error=str(exc))
            raise
    return RestoreTarget(
        backup_id=manifest.backup_id,
        source_tenant=manifest.tenant_id,
        tenant_id=target,
        storage_path=req.file or "",
        checksum=None,
    )


def plan_restore(
    db_url: str, settings: Settings, req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact
) -> RestorePlan:
    """Stage the backup and count what a restore would change now, in one transaction rolled back."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        return _restore(conn, db_url, settings, req, target, artifact, apply=False)


def apply_restore(
    db_url: str,
    settings: Settings,
    req: RestoreRequest,
    target: RestoreTarget,
    artifact: VerifiedArtifact,
    log: RunLog,
) -> AppliedRestore:
    """Apply the restore in one transaction, checked before commit.

    The tenant's lock is held on this session from before the run's log row is written
    ``running`` (stale rows of the tenant reaped first) until the row is settled: ``success``
    inside the restore's transaction, so that it commits with the rows; ``failed`` after a
    rollback. A process that dies in between leaves the row running (and the rows as they were)
    for the tenant's next backup or restore to reap.
    """
    with tenant_lock(db_url, target.tenant_id, lock_timeout=settings.lock_timeout, purpose="restore") as lock:
        conn = lock.conn
        with conn.transaction():
            reaped = ledger.reap_stale(conn, settings.ledger_schema, target.tenant_id, reaper="restore")
            _log(conn, settings, req, target.tenant_id, log, "running")

        def settle(tx: psycopg.Connection, plan: RestorePlan) -> None:
            _log(tx, settings, req, target.tenant_id, log, "success", plan=plan)

        try:
            plan = _restore(conn, db_url, settings, req, target, artifact, apply=True, before_commit=settle)
        except BaseException as exc:
            with suppress(psycopg.Error):  # a lost session: the flow's own log_restore settles the row
                _log(conn, settings, req, target.tenant_id, log, "failed", error=error_text(exc))
            raise
    return AppliedRestore(plan=plan, reaped_runs=reaped)


def _restore(
    conn: psycopg.Connection,
    db_url: str,
    settings: Settings,
    req: RestoreRequest,
    target: RestoreTarget,
    artifact: VerifiedArtifact,
    *,
    apply: bool,
    before_commit: Callable[[psycopg.Connection, RestorePlan], None] | None = None,
) -> RestorePlan:
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
        before_commit=before_commit,
        cascade=req.cascade,
        open_session=lambda: connect(db_url, lock_timeout=settings.lock_timeout),
        workers=settings.max_workers,
    )


def log_restore(
    db_url: str,
    settings: Settings,
    req: RestoreRequest,
    tenant_id: str | None,
    log: RunLog,
    *,
    plan: RestorePlan | None,
    error: str | None,
    verdict: bool = True,
) -> None:
    """Settle the run's ``backup_restore_logs`` row at its end: who, which backup, mode, counts,
    duration, result. A row already settled (an applied restore's, or one reaped) stays as it is.
    A verification also records its verdict on the backup, unless it could not judge (``verdict``
    false: no identity at hand, a bad setting), which leaves the last real verdict as it was."""
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        _log(conn, settings, req, tenant_id, log, "failed" if error else "success", plan=plan, error=error)
        if log.action == "verify" and req.backup_id and verdict:  # the backup's verdict, for list and status
            ledger.record_verification(conn, settings.ledger_schema, req.backup_id, error)


def _log(
    conn: psycopg.Connection,
    settings: Settings,
    req: RestoreRequest,
    tenant_id: str | None,
    log: RunLog,
    result: ledger.LogResult,
    *,
    plan: RestorePlan | None = None,
    error: str | None = None,
) -> None:
    details: dict[str, Any] = {
        "mode": req.mode,
        "dry_run": req.dry_run,
        "seconds": log.seconds,
    }
    if log.approval is not None:
        details["approval"] = log.approval.model_dump()
    if log.flow_run_id:
        details["flow_run_id"] = log.flow_run_id
    if req.file:
        details["file"] = req.file  # not in this ledger: backup_id stays empty
    if plan is not None and req.file:
        details["artifact_backup_id"] = plan.backup_id
    if req.tables:
        details["tables_requested"] = req.tables
    if plan is not None:
        details["tables"] = {t.table: t.model_dump(exclude={"table"}) for t in plan.tables}
        details["applied"] = plan.applied
        details["triggers"] = plan.triggers
    ledger.log_action(
        conn,
        settings.ledger_schema,
        action=log.action,
        result=result,
        tenant_id=tenant_id,
        backup_id=req.backup_id,
        performed_by=req.requested_by,
        error=error,
        details=details,
        log_id=log.id,
    )


def result_of(
    plan: RestorePlan,
    seconds: float,
    status: Literal["completed", "planned", "verified"] | None = None,
    approval: Approval | None = None,
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
                rows=t.rows,
                inserted=t.inserted,
                updated=t.updated,
                deleted=t.deleted,
                matched_by=t.matched_by,
                staged=t.staged,
            )
            for t in plan.tables
        },
        outside=[o.model_dump() for o in plan.outside],
        missing_references=[m.model_dump() for m in plan.missing_references],
        dropped_columns=plan.dropped_columns,
        added_columns=plan.added_columns,
        triggers=plan.triggers,
        seconds=round(seconds, 3),
        approval=approval,
        tenant_name=plan.tenant_name,
        backup_date=plan.backup_date,
        space=plan.space,
        chain=plan.chain,
    )
