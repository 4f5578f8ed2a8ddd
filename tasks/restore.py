"""Steps of the restore and verify flows (see tasks/step.py); each calls one plain function of
``tenant_backup.restore.steps``."""

from __future__ import annotations

from pathlib import Path

from blocks import database_url, identities, open_storage
from tasks.step import step
from tenant_backup.restore import steps
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.restore.steps import AppliedRestore, RestoreRequest, RestoreTarget, RunLog, VerifiedArtifact
from tenant_backup.settings import get_settings

__all__ = [
    "apply_restore",
    "check_file",
    "check_restore",
    "fetch_and_verify",
    "fetch_file",
    "log_restore",
    "plan_restore",
]


def _counts(plan: RestorePlan) -> str:
    inserted, updated, deleted = plan.totals
    return f"{len(plan.tables)} tables: +{inserted:,} ~{updated:,} -{deleted:,} rows, triggers {plan.triggers}"


@step("check-restore-request", summary=lambda t: f"backup {t.backup_id} of tenant {t.source_tenant} -> {t.tenant_id}")
def check_restore(req: RestoreRequest, log: RunLog, database_block: str | None) -> RestoreTarget:
    """Typed confirmation, a completed backup, an admin requester (refusals logged)."""
    return steps.check_request(database_url(database_block), get_settings(), req, log)


@step(
    "fetch-file",
    summary=lambda a: f"checksums match: {a.manifest.total_records:,} rows in {len(a.manifest.tables)} tables",
)
def fetch_file(file: str, spool: str) -> VerifiedArtifact:
    """Copy an artifact that is not in the ledger (--file) and verify it by its manifest."""
    return steps.fetch_file(file, get_settings().storage_options, Path(spool), identities)


@step("check-file", summary=lambda t: f"backup {t.backup_id} of tenant {t.source_tenant} -> {t.tenant_id}")
def check_file(
    req: RestoreRequest, artifact: VerifiedArtifact, log: RunLog, database_block: str | None
) -> RestoreTarget:
    """Typed confirmation and the admin rule, for an artifact from a file (refusals logged)."""
    return steps.check_file(database_url(database_block), get_settings(), req, artifact, log)


@step(
    "fetch-and-verify",
    summary=lambda a: (
        f"checksum matches the ledger's: {a.manifest.total_records:,} rows in {len(a.manifest.tables)} tables"
        + (" (each checked against the manifest as it is read)" if a.check_on_read else "")
    ),
)
def fetch_and_verify(target: RestoreTarget, spool: str, storage_block: str | None) -> VerifiedArtifact:
    """Download the artifact; check its checksum, manifest version and tenant; every table's sha256
    as the restore reads it."""
    return steps.verify(open_storage(storage_block), target, Path(spool), identities)


@step("plan-restore", summary=lambda plan: "would change " + _counts(plan))
def plan_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, database_block: str | None
) -> RestorePlan:
    """Stage the backup and count what would change, then roll back: nothing is written."""
    return steps.plan_restore(database_url(database_block), get_settings(), req, target, artifact)


@step("apply-restore", summary=lambda applied: "changed " + _counts(applied.plan))
def apply_restore(
    req: RestoreRequest, target: RestoreTarget, artifact: VerifiedArtifact, log: RunLog, database_block: str | None
) -> AppliedRestore:
    """Restore in one transaction, checked before commit, its log row running until it commits."""
    return steps.apply_restore(database_url(database_block), get_settings(), req, target, artifact, log)


@step("log-restore")
def log_restore(
    req: RestoreRequest,
    tenant_id: str | None,
    log: RunLog,
    plan: RestorePlan | None,
    error: str | None,
    database_block: str | None,
    verdict: bool = True,
) -> None:
    """Settle the run's log row (a row an applied restore settled stays as it is); a verification's
    verdict goes on the backup (``verdict`` false: it could not judge)."""
    steps.log_restore(
        database_url(database_block), get_settings(), req, tenant_id, log, plan=plan, error=error, verdict=verdict
    )
