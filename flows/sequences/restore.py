"""A restore and a verify, each as one sequence of steps (run by a runner: see flows/runner.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flows.runner import Runner
from tasks import restore as t
from tasks.report import publish_restore_plan, publish_restore_report
from tenant_backup.backup.steps import error_text
from tenant_backup.errors import ApprovalRejectedError, ConfigurationError
from tenant_backup.naming import tenant_label, tenant_tags
from tenant_backup.progress import Progress, publish
from tenant_backup.restore import steps
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.restore.steps import RestoreRequest, RunLog
from tenant_backup.results import RestoreResult
from tenant_backup.settings import get_settings
from tenant_backup.spool import spool_dir

__all__ = ["ApprovalRequest", "restore_backup", "verify_backup"]


@dataclass(frozen=True)
class ApprovalRequest:
    """Whether a human approves the plan first, and how long to wait for the answer."""

    required: bool = False
    timeout_seconds: int = 3600
    poll_seconds: int = 10


def restore_backup(
    run: Runner,
    req: RestoreRequest,
    approval: ApprovalRequest,
    database_block: str | None,
    storage_block: str | None,
) -> RestoreResult:
    """Check the request, verify the artifact, plan (and publish the plan; with an approval, wait
    for it), then apply in one transaction; one log row tells how it ended."""
    started = time.perf_counter()
    log = RunLog(action="restore", flow_run_id=run.flow_run_id)
    # Both checks log their own refusals; a file's checks need its manifest, so they come after it.
    target = None if req.file else run(t.check_restore, req, log, database_block)
    plan: RestorePlan | None = None
    try:
        with spool_dir("restore", get_settings().spool_dir) as spool:
            if target is None:
                artifact = run(t.fetch_file, req.file or "", str(spool))
                target = run(t.check_file, req, artifact, log, database_block)
            else:
                artifact = run(t.fetch_and_verify, target, str(spool), storage_block)
            name = artifact.manifest.tenant_name if target.tenant_id == artifact.manifest.tenant_id else None
            kind = "dry-run" if req.dry_run else "restore"
            run.label(f"{kind}-{tenant_label(target.tenant_id, name)}", [*tenant_tags(target.tenant_id, name), kind])
            # the rows to stage, for a progress bar (the run's progress artifact is given them below)
            publish(Progress(target.tenant_id, "", 0, 0, expected_rows=artifact.manifest.total_records))
            if req.dry_run or approval.required:
                plan = run(t.plan_restore, req, target, artifact, database_block)
                run.report(publish_restore_plan, plan)
                if not req.dry_run:
                    answer = run.approve(plan, approval.timeout_seconds, approval.poll_seconds)
                    log = log.model_copy(update={"approval": answer})
                    run.log(f"restore of backup {target.backup_id} {answer.describe()}")
                    if not answer.approved:
                        raise ApprovalRejectedError(
                            f"restore of backup {target.backup_id} into tenant {target.tenant_id}: "
                            f"{answer.describe()}; nothing was changed",
                            backup_id=target.backup_id,
                            tenant_id=target.tenant_id,
                        )
            if not req.dry_run:
                with run.progress(
                    target.tenant_id,
                    f"Restore of backup {target.backup_id}: rows staged (then applied in one transaction)",
                    artifact.manifest.total_records,
                ):
                    applied = run(t.apply_restore, req, target, artifact, log, database_block)
                run.crashed(applied.reaped_runs, target.tenant_id, "restore")
                plan = applied.plan
    except BaseException as exc:
        tenant = target.tenant_id if target else None
        run(t.log_restore, req, tenant, log, plan, error_text(exc), database_block)
        raise
    assert plan is not None and target is not None
    run(t.log_restore, req, target.tenant_id, log, plan, None, database_block)  # an applied restore's is settled
    waited = log.approval.waited_seconds if log.approval else 0.0
    result = steps.result_of(plan, time.perf_counter() - started - waited, approval=log.approval)
    run.report(publish_restore_report, result, plan)
    return result


def verify_backup(run: Runner, backup_id: str, database_block: str | None, storage_block: str | None) -> RestoreResult:
    """Download the backup, check its checksum against the ledger and every table's sha256 against
    its manifest, then stage it in the database and plan a restore, rolled back."""
    started = time.perf_counter()
    req = RestoreRequest(backup_id=backup_id, confirm=None, dry_run=True)
    log = RunLog(action="verify", flow_run_id=run.flow_run_id)
    target = run(t.check_restore, req, log, database_block)  # a dry run needs no confirmation
    try:
        with spool_dir("verify", get_settings().spool_dir) as spool:
            artifact = run(t.fetch_and_verify, target, str(spool), storage_block)
            name = artifact.manifest.tenant_name
            run.label(
                f"verify-{tenant_label(target.tenant_id, name)}", [*tenant_tags(target.tenant_id, name), "verify"]
            )
            plan = run(t.plan_restore, req, target, artifact, database_block)
    except BaseException as exc:
        judged = not isinstance(exc, ConfigurationError)  # a missing identity says nothing of the backup
        run(t.log_restore, req, target.tenant_id, log, None, error_text(exc), database_block, judged)
        raise
    run(t.log_restore, req, target.tenant_id, log, plan, None, database_block)
    return steps.result_of(plan, time.perf_counter() - started, status="verified")
