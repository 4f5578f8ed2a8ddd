"""Steps of the backup flow: each opens what it needs and calls one plain function of
``tenant_backup.backup``; a runner runs them as Prefect tasks or plain calls (see tasks/step.py)."""

from __future__ import annotations

from pathlib import Path

from blocks import database_url, open_storage
from tasks.step import step, transient
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.backup import assemble, entries, steps
from tenant_backup.backup.assemble import ArtifactInfo
from tenant_backup.backup.chain import ChainPlan
from tenant_backup.backup.entries import LedgerEntry
from tenant_backup.backup.extract import TablePart
from tenant_backup.backup.steps import BackupPlan, BackupRequest
from tenant_backup.locks import Snapshot
from tenant_backup.settings import get_settings
from tenant_backup.tenancy.catalog import TableScope
from tenant_backup.tenancy.tenants import TenantList

__all__ = [
    "check_storage",
    "extract_table",
    "fail_entry",
    "finish_entry",
    "list_tenants",
    "mark_started",
    "open_entry",
    "plan_backup",
    "write_artifact",
]


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


@step(
    "plan-backup",
    run_name="plan-{request.tenant_id}",
    summary=lambda p: (
        f"tenant {p.request.tenant_id} ({p.tenant_name or 'no name'}): {len(p.tables)} tables, "
        f"about {_rows(sum(s.est_rows for s in p.tables))}"
    ),
)
def plan_backup(request: BackupRequest, database_block: str | None) -> BackupPlan:
    """Check categories, tables, the role's access, the tenant and the requester before anything is written."""
    return steps.plan_backup(database_url(database_block), get_settings(), request)


@step("check-storage", summary=lambda removed: f"reachable; removed {len(removed)} leftover(s)" if removed else "")
def check_storage(plan: BackupPlan, storage_block: str | None) -> list[str]:
    """Fail before extracting anything when the storage cannot be reached, and remove what killed
    runs of the tenant left there (the flow holds the tenant lock); returns the keys removed."""
    return assemble.prepare_storage(open_storage(storage_block), plan.database, plan.request.tenant_id)


@step("open-ledger-entry", summary=lambda e: f"backup {e.backup_id}")
def open_entry(plan: BackupPlan, flow_run_id: str | None, database_block: str | None) -> LedgerEntry:
    """Create the ledger row (throttle checked, stale rows reaped); it records ``flow_run_id``."""
    return entries.open_entry(database_url(database_block), get_settings(), plan, flow_run_id)


@step("mark-started")
def mark_started(backup_id: str, snapshot: Snapshot, database_block: str | None) -> None:
    entries.mark_started(database_url(database_block), get_settings(), backup_id, snapshot)


@step(
    "extract-table",
    run_name="extract-{scope.table}",
    retries=1,
    retry_delay_seconds=2,
    retry_if=transient,
    summary=lambda part: f"{_rows(part.rows)}, {part.size:,} bytes",
)
def extract_table(
    scope: TableScope,
    request: BackupRequest,
    chain: ChainPlan | None,
    snapshot_id: str,
    spool: str,
    database_block: str | None,
) -> TablePart:
    """COPY one table's tenant rows (an incremental's: those changed), inside the shared snapshot,
    into the spool folder; in a chain, digest its keys."""
    return steps.extract_part(
        database_url(database_block), get_settings(), scope, snapshot_id, Path(spool), request, chain
    )


@step(
    "write-artifact",
    retries=1,
    retry_delay_seconds=5,
    retry_if=transient,
    summary=lambda a: f"{a.storage_path}, {a.size:,} bytes",
)
def write_artifact(
    plan: BackupPlan, manifest: Manifest, parts: list[TablePart], storage_block: str | None
) -> ArtifactInfo:
    """Assemble the artifact and write it to storage (temporary key, then moved into place)."""
    return steps.write_artifact(open_storage(storage_block), plan, manifest, parts)


@step("complete-ledger-entry")
def finish_entry(
    backup_id: str,
    manifest: Manifest,
    artifact: ArtifactInfo,
    plan: BackupPlan,
    parts: list[TablePart],
    database_block: str | None,
) -> None:
    entries.finish_entry(database_url(database_block), get_settings(), backup_id, manifest, artifact, plan, parts)


@step("fail-ledger-entry")
def fail_entry(backup_id: str, tenant_id: str, error: str, database_block: str | None) -> None:
    entries.fail_entry(database_url(database_block), get_settings(), backup_id, tenant_id, error)


@step(
    "list-tenants",
    summary=lambda found: (
        f"{len(found.tenants)} tenant(s)"
        + (f", {len(found.unlisted)} id(s) that rows hold but no tenant row lists" if found.unlisted else "")
    ),
)
def list_tenants(profile: str | None, tenant_column: str | None, database_block: str | None) -> TenantList:
    return steps.list_tenants(database_url(database_block), get_settings(), profile, tenant_column)
