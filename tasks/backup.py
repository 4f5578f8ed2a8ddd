"""Tasks of the backup flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import State, TaskRun

from blocks import database_url, open_storage
from tasks.runs import current_flow_run_id, mark_crashed
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.backup import assemble, steps
from tenant_backup.backup.assemble import ArtifactInfo
from tenant_backup.backup.extract import TablePart
from tenant_backup.backup.steps import BackupPlan, BackupRequest
from tenant_backup.db import Snapshot
from tenant_backup.errors import TenantBackupError
from tenant_backup.settings import get_settings
from tenant_backup.tenancy.catalog import TableScope

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


def _transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only what may succeed later (connection drops, storage hiccups)."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, TenantBackupError) and exc.transient


@task(name="plan-backup", task_run_name="plan-{request.tenant_id}")
def plan_backup(request: BackupRequest, database_block: str | None) -> BackupPlan:
    """Check categories, tables and the requester before anything is written."""
    return steps.plan_backup(database_url(database_block), get_settings(), request)


@task(name="check-storage")
def check_storage(plan: BackupPlan, storage_block: str | None) -> list[str]:
    """Fail before extracting anything when the storage cannot be reached, and remove what killed
    runs of the tenant left there (the flow holds the tenant lock); returns the keys removed."""
    return assemble.prepare_storage(open_storage(storage_block), plan.database, plan.request.tenant_id)


@task(name="open-ledger-entry")
def open_entry(plan: BackupPlan, database_block: str | None) -> str:
    """Create the ledger row (throttle checked, stale rows reaped and their flow runs marked
    Crashed); returns the backup id. The row records this flow run."""
    entry = steps.open_entry(database_url(database_block), get_settings(), plan, current_flow_run_id())
    mark_crashed(entry.reaped_runs, plan.request.tenant_id, "backup")
    return entry.backup_id


@task(name="mark-started")
def mark_started(backup_id: str, snapshot: Snapshot, database_block: str | None) -> None:
    steps.mark_started(database_url(database_block), get_settings(), backup_id, snapshot)


@task(
    name="extract-table",
    task_run_name="extract-{scope.table}",
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=_transient,
)
def extract_table(
    scope: TableScope, request: BackupRequest, snapshot_id: str, spool: str, database_block: str | None
) -> TablePart:
    """COPY one table's tenant rows, inside the shared snapshot, into the spool folder."""
    return steps.extract_part(database_url(database_block), get_settings(), scope, snapshot_id, Path(spool), request)


@task(name="write-artifact", retries=1, retry_delay_seconds=5, retry_condition_fn=_transient)
def write_artifact(
    plan: BackupPlan, manifest: Manifest, parts: list[TablePart], storage_block: str | None
) -> ArtifactInfo:
    """Assemble the artifact and write it to storage (temporary key, then moved into place)."""
    return steps.write_artifact(open_storage(storage_block), plan, manifest, parts)


@task(name="complete-ledger-entry")
def finish_entry(backup_id: str, manifest: Manifest, artifact: ArtifactInfo, database_block: str | None) -> None:
    steps.finish_entry(database_url(database_block), get_settings(), backup_id, manifest, artifact)


@task(name="fail-ledger-entry")
def fail_entry(backup_id: str, tenant_id: str, error: str, database_block: str | None) -> None:
    steps.fail_entry(database_url(database_block), get_settings(), backup_id, tenant_id, error)


@task(name="list-tenants")
def list_tenants(profile: str | None, tenant_column: str | None, database_block: str | None) -> list[str]:
    return steps.list_tenants(database_url(database_block), get_settings(), profile, tenant_column)
