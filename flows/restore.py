"""Restore and verify flows."""

from __future__ import annotations

import time
from typing import Literal
from uuid import UUID

from prefect import flow, pause_flow_run
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state

from tasks import restore as t
from tasks.report import ProgressArtifact, plan_markdown, publish_restore_plan, publish_restore_report
from tenant_backup.backup.steps import error_text
from tenant_backup.errors import ApprovalRejectedError
from tenant_backup.restore import steps
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.restore.steps import RestoreRequest, RestoreTarget
from tenant_backup.results import RestoreResult
from tenant_backup.settings import get_settings
from tenant_backup.spool import spool_dir

__all__ = ["RestoreApproval", "answer_approval", "restore_backup", "verify_backup"]


class RestoreApproval(RunInput):
    """The approver's answer. Not approved unless someone says so."""

    approve: bool = False
    approver: str = ""
    reason: str = ""


def answer_approval(
    flow_run_id: UUID | str, *, approve: bool, approver: str, reason: str = "", timeout: float = 60
) -> None:
    """Answer a restore that waits for approval, as the Prefect UI's form does.

    A paused run is ready for an answer only once its form (the run input schema) is saved, which
    Prefect does just *after* the run turns PAUSED: resuming in between is refused with "Run input
    schema not found". This waits (up to ``timeout`` seconds) until the run is paused and its form
    exists, then resumes it with the answer.
    """
    run_id = UUID(str(flow_run_id))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_paused():
                try:
                    client.read_flow_run_input(run_id, keyset_from_paused_state(state)["schema"])
                    break
                except ObjectNotFound:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run_id} did not wait for approval within {timeout:.0f} s")
            time.sleep(0.5)
    resume_flow_run(run_id, run_input={"approve": approve, "approver": approver, "reason": reason})


def _ask_approval(plan: RestorePlan, timeout: int, poll_interval: int) -> RestoreApproval:
    try:
        answer = pause_flow_run(
            wait_for_input=RestoreApproval.with_initial_data(
                description=plan_markdown(plan, title="Approve this restore?"), approve=False
            ),
            timeout=timeout,
            poll_interval=poll_interval,
        )
    except FlowPauseTimeout as exc:
        raise ApprovalRejectedError(
            f"no approval within {timeout} s for restoring backup {plan.backup_id}: nothing was changed",
            backup_id=plan.backup_id,
            tenant_id=plan.tenant_id,
        ) from exc
    assert isinstance(answer, RestoreApproval)
    if not answer.approve:
        raise ApprovalRejectedError(
            f"restore of backup {plan.backup_id} rejected by {answer.approver or 'the approver'}"
            f"{': ' + answer.reason if answer.reason else ''}; nothing was changed",
            backup_id=plan.backup_id,
            tenant_id=plan.tenant_id,
        )
    return answer


@flow(
    name="restore-backup",
    flow_run_name="restore-{backup_id}",
    description="Restore one tenant's rows from a verified backup, in one transaction, after approval.",
)
def restore_backup(
    backup_id: UUID,
    confirm: str | None = None,
    requested_by: UUID | None = None,
    mode: Literal["replace", "merge"] = "replace",
    dry_run: bool = False,
    tables: list[str] | None = None,
    require_approval: bool = False,
    target_tenant: str | None = None,
    approval_timeout_seconds: int = 3600,
    approval_poll_seconds: int = 10,
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
        approval_poll_seconds: How often the paused run checks for an answer.
        database_block: A tenant-backup-database block; else TENANT_BACKUP_DATABASE_URL.
        storage_block: A tenant-backup-storage block; else TENANT_BACKUP_STORAGE_URL.
    """
    started = time.perf_counter()
    req = RestoreRequest(
        backup_id=str(backup_id),
        confirm=confirm,
        requested_by=str(requested_by) if requested_by else None,
        mode=mode,
        dry_run=dry_run,
        tables=tables or None,
        target_tenant=target_tenant,
    )
    log = t.new_run_log()
    target = t.check_restore(req, log, database_block)  # logs its own refusals
    plan: RestorePlan | None = None
    try:
        with spool_dir("restore", get_settings().spool_dir) as spool:
            artifact = t.fetch_and_verify(target, spool, storage_block)
            if dry_run or require_approval:
                plan = t.plan_restore(req, target, artifact, database_block)
                publish_restore_plan(plan)
                if not dry_run:
                    _ask_approval(plan, approval_timeout_seconds, approval_poll_seconds)
            if not dry_run:
                with ProgressArtifact(
                    target.tenant_id,
                    f"Restore of backup {target.backup_id}: rows staged (then applied in one transaction)",
                    artifact.manifest.total_records,
                ):
                    plan = t.apply_restore(req, target, artifact, log, database_block)
    except BaseException as exc:
        t.log_restore(req, target.tenant_id, log, plan, error_text(exc), database_block)
        raise
    assert plan is not None
    t.log_restore(req, target.tenant_id, log, plan, None, database_block)  # an applied restore's is settled
    result = steps.result_of(plan, time.perf_counter() - started)
    publish_restore_report(result, plan)
    return result


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
    started = time.perf_counter()
    req = RestoreRequest(backup_id=str(backup_id), confirm=None, dry_run=True)
    log = t.new_run_log("verify")
    target: RestoreTarget = t.check_restore(req, log, database_block)  # a dry run needs no confirmation
    try:
        with spool_dir("verify", get_settings().spool_dir) as spool:
            artifact = t.fetch_and_verify(target, spool, storage_block)
            plan = t.plan_restore(req, target, artifact, database_block)
    except BaseException as exc:
        t.log_restore(req, target.tenant_id, log, None, error_text(exc), database_block)
        raise
    t.log_restore(req, target.tenant_id, log, plan, None, database_block)
    return steps.result_of(plan, time.perf_counter() - started, status="verified")
