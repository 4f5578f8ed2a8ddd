"""A backup's ledger row through its life, as steps: opened (pending) under the tenant lock,
started with its snapshot, completed with its artifact (and, in a chain, its key digests), or
failed with its error. ``tasks/backup.py`` wraps each as a Prefect task."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.backup.assemble import ArtifactInfo
from tenant_backup.backup.extract import TablePart
from tenant_backup.backup.steps import BackupPlan
from tenant_backup.ledger import chains, keys
from tenant_backup.locks import Snapshot
from tenant_backup.sessions import session
from tenant_backup.settings import Settings

__all__ = ["LedgerEntry", "fail_entry", "finish_entry", "mark_started", "open_entry"]


class LedgerEntry(BaseModel):
    """A backup's new ledger row, and the Prefect flow runs of the stale rows reaped before it."""

    backup_id: str
    reaped_runs: list[str] = []


def open_entry(db_url: str, settings: Settings, plan: BackupPlan, flow_run_id: str | None = None) -> LedgerEntry:
    """Reap the tenant's stale rows, then create the ledger row (pending), recording the Prefect
    flow run when there is one; the caller holds the tenant lock."""
    req = plan.request
    with session(db_url, lock_timeout=settings.lock_timeout) as conn, conn.transaction():
        keys.refuse_erased(conn, settings.ledger_schema, req.tenant_id)  # erased since the plan: under the lock
        if plan.chain and plan.chain.parent:
            chains.refuse_moved_on(conn, settings.ledger_schema, req.tenant_id, plan.chain.parent.backup_id)
        reaped = ledger.reap_stale(conn, settings.ledger_schema, req.tenant_id, reaper="backup")
        backup_id = ledger.create_backup(
            conn,
            settings.ledger_schema,
            tenant_id=req.tenant_id,
            tenant_column=plan.tenant_column,
            name=req.name or f"{req.backup_type} backup {datetime.now():%Y-%m-%d %H:%M}",
            backup_type=req.backup_type,
            type_="incremental" if plan.incremental else plan.type,
            format_=req.format,
            categories=plan.categories,
            created_by=req.requested_by,
            throttle=None if req.force else timedelta(seconds=settings.throttle_seconds),
            schedule_id=req.schedule_id,
            metadata={"flow_run_id": flow_run_id} if flow_run_id else None,
            parent_id=plan.chain.parent.backup_id if plan.chain and plan.chain.parent else None,
        )
    return LedgerEntry(backup_id=backup_id, reaped_runs=reaped)


def finish_entry(
    db_url: str,
    settings: Settings,
    backup_id: str,
    manifest: Manifest,
    artifact: ArtifactInfo,
    plan: BackupPlan | None = None,
    parts: list[TablePart] | None = None,
) -> None:
    """Mark the row completed with the artifact's path, size and checksum, and log the action; in a
    chain, keep its key digests (the next incremental compares with them) in the same transaction."""
    chain_meta = _chain_metadata(plan, manifest) if plan and plan.chain else {}
    with session(db_url, lock_timeout=settings.lock_timeout) as conn, conn.transaction():
        if plan and plan.chain:
            digests = {
                p.table: (p.key_state.buckets, Path(p.key_state.digests_path).read_bytes())
                for p in parts or []
                if p.key_state
            }
            chains.store_digests(conn, settings.ledger_schema, backup_id, manifest.tenant_id, digests)
        ledger.complete_backup(
            conn,
            settings.ledger_schema,
            backup_id,
            storage_path=artifact.storage_path,
            file_size=artifact.size,
            record_count=manifest.total_records,
            checksum=artifact.checksum,
            tables=sorted(manifest.tables),
            encrypted_to=artifact.encrypted_to or None,
            metadata={
                "storage_key": artifact.key,
                "database": manifest.database.model_dump() if manifest.database else None,
                "snapshot_time": manifest.date.isoformat(),
                "schema_fingerprint": manifest.schema_fingerprint,
                "server_version": manifest.server_version,
                "artifact_version": manifest.version,
                "profile": manifest.profile,
                "profile_doc": manifest.profile_doc,
                "tenant_name": manifest.tenant_name,
                "rows": {name: t.rows for name, t in manifest.tables.items()},
                **chain_meta,
            },
        )
        ledger.log_action(
            conn,
            settings.ledger_schema,
            action="backup",
            result="success",
            tenant_id=manifest.tenant_id,
            backup_id=backup_id,
            details={"records": manifest.total_records, "bytes": artifact.size},
        )


def _chain_metadata(plan: BackupPlan, manifest: Manifest) -> dict[str, Any]:
    """What the next incremental needs of this backup besides its snapshot's transactions
    (recorded when it started): the chain's seed, tables' identity and base time, the server's
    timeline, and whether the chain holds the whole tenant."""
    assert plan.chain is not None
    parent = plan.chain.parent
    return {
        "chain_seed": plan.chain.seed,
        "table_identity": plan.chain.identity,
        "chain_base_at": parent.base_at if parent else manifest.date.isoformat(),
        "timeline": plan.timeline,
        "scope_type": plan.type,
    }


def fail_entry(db_url: str, settings: Settings, backup_id: str, tenant_id: str, error: str) -> None:
    """Mark the row failed with the error, and log the action."""
    with session(db_url, lock_timeout=settings.lock_timeout) as conn, conn.transaction():
        ledger.fail_backup(conn, settings.ledger_schema, backup_id, error)
        ledger.log_action(
            conn,
            settings.ledger_schema,
            action="backup",
            result="failed",
            tenant_id=tenant_id,
            backup_id=backup_id,
            error=error,
        )


def mark_started(db_url: str, settings: Settings, backup_id: str, snapshot: Snapshot) -> None:
    with session(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.mark_in_progress(
            conn,
            settings.ledger_schema,
            backup_id,
            {
                "snapshot_time": snapshot.taken_at.isoformat(),
                "server_version": snapshot.server_version,
                "xids": snapshot.xids,  # the transactions the snapshot sees: an incremental's starting point
            },
        )
