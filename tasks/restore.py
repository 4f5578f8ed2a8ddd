"""Tasks of the restore and verify flows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import task

from blocks import database_url, open_storage
from tasks.runs import current_flow_run_id, mark_crashed
from tenant_backup.restore import steps
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.restore.steps import RestoreRequest, RestoreTarget, RunLog, VerifiedArtifact
from tenant_backup.settings import get_settings

__all__ = ["apply_restore", "check_restore", "fetch_and_verify", "log_restore", "new_run_log", "plan_restore"]


def new_run_log(action: Literal["restore", "verify"] = "restore") -> RunLog:
    """The log row of this run, recording its Prefect flow run."""
    return RunLog(action=action, flow_run_id=current_flow_run_id())


@task(name="check-restore-request")
def check_restore(req: RestoreRequest, log: RunLog, database_block: str | None) -> RestoreTarget:
    """Typed confirmation, a completed backup, an admin requester (refusals logged)."""
    return steps.check_request(database_url(database_block), get_settings(), req, log)


@task(name="fetch-and-verify")
def fetch_and_verify(target: RestoreTarget, spool: str, storage_block: str | None) -> VerifiedArtifact:
    """Download the artifact; check its checksum, manifest version, tenant and every table's sha256."""
    return steps.verify(open_storage(storage_block), target, Path(spool))


@task(name="plan-restore")
def plan_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, database_block: str | None
) -> RestorePlan:
    """Stage the backup and count what would change, then roll back: nothing is written."""
    return steps.plan_restore(database_url(database_block), get_settings(), req, target, artifact)


@task(name="apply-restore")
def apply_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, log: RunLog, database_block: str | None
) -> RestorePlan:
    """Restore in one transaction, checked before commit, its log row running until it commits;
    the flow runs of the tenant's stale rows reaped first are marked Crashed."""
    applied = steps.apply_restore(database_url(database_block), get_settings(), req, target, artifact, log)
    mark_crashed(applied.reaped_runs, target.tenant_id, "restore")
    return applied.plan


@task(name="log-restore")
def log_restore(
    req: RestoreRequest,
    tenant_id: str | None,
    log: RunLog,
    plan: RestorePlan | None,
    error: str | None,
    database_block: str | None,
) -> None:
    """Settle the run's log row (a row an applied restore settled stays as it is)."""
    steps.log_restore(database_url(database_block), get_settings(), req, tenant_id, log, plan=plan, error=error)
