"""Reports that a run leaves in the Prefect UI (runners call these only under Prefect; Prefect's
artifacts module is imported when a report is made, so importing this module costs nothing)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from tenant_backup import progress
from tenant_backup.naming import tenant_label
from tenant_backup.operations.freshness import TenantStatus
from tenant_backup.operations.maintenance import PruneReport
from tenant_backup.operations.reconcile import ReconcileReport
from tenant_backup.operations.schedules import SyncReport
from tenant_backup.restore.engine import RestorePlan
from tenant_backup.results import BackupResult, RestoreResult, TenantOutcome

__all__ = [
    "ProgressArtifact",
    "artifact_key",
    "plan_markdown",
    "publish_backup_report",
    "publish_prune_report",
    "publish_reconcile_report",
    "publish_restore_plan",
    "publish_restore_report",
    "publish_sync_report",
    "publish_tenants_report",
]


def artifacts() -> Any:
    """``prefect.artifacts``, imported on first use."""
    import prefect.artifacts

    return prefect.artifacts


def artifact_key(prefix: str, tenant_id: str, tenant_name: str | None = None) -> str:
    """A valid artifact key (``^[a-z0-9-]*$``) for one tenant, stable across runs (so versions pile
    up), readable: ``backup-le-wouri-bonapriso-8b42958c``."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{tenant_label(tenant_id, tenant_name)}".lower()).strip("-")[:100]


def publish_tenants_report(outcomes: list[TenantOutcome], seconds: float) -> None:
    """One markdown artifact for a run of many tenants: a line per tenant, failures first."""
    order = {"failed": 0, "skipped": 1, "completed": 2}
    counts = {s: sum(o.status == s for o in outcomes) for s in order}
    rows = sum(o.record_count or 0 for o in outcomes)
    size = sum(o.file_size or 0 for o in outcomes)
    lines = [
        f"# Backup of {len(outcomes):,} tenants",
        "",
        f"- {counts['completed']:,} completed, {counts['skipped']:,} skipped (throttled), "
        f"{counts['failed']:,} failed; {rows:,} rows, {size:,} bytes, {seconds:.1f} s",
        "",
        "| tenant | status | backup | rows | bytes | s | error |",
        "|---|---|---|---:|---:|---:|---|",
        *(
            f"| {o.tenant_name or o.tenant_id} (`{o.tenant_id}`) | {o.status} | `{o.backup_id or '-'}` | "
            f"{o.record_count or 0:,} | {o.file_size or 0:,} | {o.seconds or 0:.2f} | "
            f"{(o.error or '').replace('|', '/')[:300]} |"
            for o in sorted(outcomes, key=lambda o: (order[o.status], o.tenant_name or o.tenant_id))
        ),
    ]
    artifacts().create_markdown_artifact(
        markdown="\n".join(lines),
        key="backup-all-tenants",
        description=f"{counts['completed']:,} of {len(outcomes):,} tenants backed up",
    )


def publish_backup_report(result: BackupResult) -> None:
    """A markdown artifact: tables, rows, bytes, seconds, checksum."""
    lines = [
        f"# Backup of {result.tenant_name or result.tenant_id}",
        "",
        f"- backup id: `{result.backup_id}`",
        f"- tenant: `{result.tenant_id}` ({result.type}, categories: {', '.join(result.categories)})",
        f"- artifact: `{result.storage_path}` ({result.file_size:,} bytes)",
        f"- checksum: `{result.checksum}`",
        f"- rows: {result.record_count:,} in {len(result.tables)} tables, {result.seconds:.2f} s",
        *([f"- **left out** (they hold the tenant column): {', '.join(result.left_out)}"] if result.left_out else []),
        "",
        "| table | rows |",
        "|---|---:|",
        *(f"| {name} | {rows:,} |" for name, rows in sorted(result.tables.items())),
    ]
    artifacts().create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key("backup", result.tenant_id, result.tenant_name),
        description=f"Backup {result.backup_id} of {result.tenant_name or 'tenant'} ({result.tenant_id})",
    )


def plan_markdown(plan: RestorePlan, title: str) -> str:
    """The plan as markdown: per table rows to insert / update / delete, and effects outside."""
    taken = f", taken {plan.backup_date:%Y-%m-%d %H:%M} UTC" if plan.backup_date else ""
    who = f"**{plan.tenant_name}** (`{plan.tenant_id}`)" if plan.tenant_name else f"tenant `{plan.tenant_id}`"
    source = f" from tenant `{plan.source_tenant}`" if plan.source_tenant != plan.tenant_id else ""
    keyless = [t.table for t in plan.tables if t.matched_by == "rows"]
    lines = [
        f"## {title}",
        "",
        f"Backup `{plan.backup_id}`{taken}{source}, into {who}. Mode **{plan.mode}**; app triggers {plan.triggers}.",
        "",
        # Short columns, so that the whole plan fits the approval form.
        "| table | rows | + | ~ | − |",
        "|---|---:|---:|---:|---:|",
        *(f"| {t.table} | {t.rows:,} | {t.inserted:,} | {t.updated:,} | {t.deleted:,} |" for t in plan.tables),
        "",
        "rows: in the backup; + inserted; ~ updated (values differ); − deleted (not in the backup)."
        + (f" Matched by whole rows (no key): {', '.join(keyless)}." if keyless else ""),
    ]
    if plan.space is not None:
        lines += ["", f"Room on the database server: {plan.space.describe()}."]
    if plan.outside:
        lines += ["", "Rows outside the restore that the deletes reach:", ""]
        lines += [f"- {o.rows:,} row(s) of `{o.table}` via `{o.foreign_key}`: {o.action}" for o in plan.outside]
    if plan.missing_references:
        lines += ["", "**Refused**: rows of the backup reference rows this database lacks:", ""]
        lines += [
            f"- {m.rows:,} row(s) of `{m.table}` via `{m.foreign_key}` -> `{m.references}` "
            f"(e.g. {', '.join(m.examples)})"
            for m in plan.missing_references
        ]
    for label, cols in (
        ("dropped since the backup (not restored)", plan.dropped_columns),
        ("added since the backup (take their default)", plan.added_columns),
    ):
        if cols:
            lines += ["", f"Columns {label}: " + "; ".join(f"{t}: {', '.join(c)}" for t, c in cols.items())]
    return "\n".join(lines)


def publish_restore_plan(plan: RestorePlan) -> None:
    """The plan as a table artifact (one row per table)."""
    artifacts().create_table_artifact(
        table=[t.model_dump() for t in plan.tables],
        key=artifact_key("restore-plan", plan.tenant_id, plan.tenant_name),
        description=plan_markdown(plan, title="Restore plan"),
    )


def publish_restore_report(result: RestoreResult, plan: RestorePlan) -> None:
    """The plan as done, how long the work took, and who approved it after how long a wait."""
    markdown = plan_markdown(plan, title=f"Restore {result.status} in {result.seconds:.2f} s")
    if result.approval is not None:
        markdown += (
            f"\n\nApproval: {result.approval.describe()}, after a wait of {result.approval.waited_seconds:.0f} s "
            "(not counted in the restore's time)."
        )
    artifacts().create_markdown_artifact(
        markdown=markdown,
        key=artifact_key("restore", result.tenant_id, result.tenant_name),
        description=f"Restore of backup {result.backup_id} into {result.tenant_name or 'tenant'} ({result.tenant_id})",
    )


def publish_prune_report(report: PruneReport, tenant_id: str | None) -> None:
    """Every decision (kept or deleted, and why) as a table."""
    gone = "would delete" if report.dry_run else "deleted"
    artifacts().create_table_artifact(
        table=[
            {
                "backup": d.backup_id,
                "tenant": d.tenant_id,
                "created": d.created_at.isoformat(timespec="seconds"),
                "status": d.status,
                "decision": "keep"
                if d.keep
                else ("error" if d.backup_id in report.errors else _gone(gone, d.backup_id in report.not_ours)),
                "reason": report.errors.get(d.backup_id, d.reason),
            }
            for d in report.decisions
        ],
        key=artifact_key("retention", tenant_id or "all-tenants"),
        description=f"Retention{' (dry run)' if report.dry_run else ''}: {len(report.to_delete)} {gone}, "
        f"{len(report.decisions) - len(report.to_delete)} kept, {len(report.errors)} errors",
    )


def _gone(verb: str, not_ours: bool) -> str:
    return f"{verb} (ledger row only: the object belongs to another database)" if not_ours else verb


def publish_reconcile_report(report: ReconcileReport) -> None:
    lines = [f"# Storage vs ledger{' (cleaned)' if report.cleaned else ''}", ""]
    for label, items in (
        ("objects of this database without a ledger row", report.orphans),
        ("incomplete uploads of dead runs", report.uploads),
        ("completed backups whose object is gone", report.missing),
        ("left: a run of the tenant is in progress", report.busy),
        ("not ours (another database, or an older layout): never touched", report.not_ours),
        ("dead spool folders removed", report.spools_removed),
    ):
        lines += [f"- {label}: {len(items)}", *(f"  - `{item}`" for item in items)]
    artifacts().create_markdown_artifact(
        markdown="\n".join(lines), key="reconcile-storage", description="Storage reconciliation"
    )


def publish_sync_report(report: SyncReport) -> None:
    rows: list[dict[str, Any]] = [
        {
            "schedule": c.slug,
            "action": c.action,
            "cron": c.cron or "",
            "tenant": c.tenant_id or "",
            "next run (UTC)": c.next_run.isoformat(timespec="minutes") if c.next_run else "",
        }
        for c in report.changes
    ]
    rows += [
        {
            "schedule": f"row {bad.id}",
            "action": "skipped (invalid)",
            "cron": "",
            "tenant": bad.tenant_id or "",
            "next run (UTC)": bad.error,
        }
        for bad in report.invalid
    ]
    artifacts().create_table_artifact(
        table=rows,
        key="schedule-sync",
        description=f"Schedules of {report.deployment} ({report.timezone}): {report.changed} changed, "
        f"{len(report.invalid)} invalid row(s) skipped",
    )


class ProgressArtifact:
    """A Prefect progress artifact fed by :mod:`tenant_backup.progress` events of one tenant
    (rows done over rows expected), updated at most every ``every`` seconds."""

    def __init__(self, tenant_id: str, description: str, expected_rows: int = 0, every: float = 2.0) -> None:
        self.tenant_id = tenant_id
        self.description = description
        self.every = every
        self.expected = expected_rows
        self.done = 0
        self._id: Any = None
        self._last = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressArtifact:
        self._id = artifacts().create_progress_artifact(
            progress=0.0, key=artifact_key("progress", self.tenant_id), description=self.description
        )
        progress.subscribe(self)
        return self

    def __call__(self, event: progress.Progress) -> None:
        if event.tenant_id != self.tenant_id:
            return
        with self._lock:
            self.expected += event.expected_rows or 0
            self.done += event.rows
            now = time.monotonic()
            if now - self._last < self.every or not self.expected:
                return
            self._last = now
            value = min(99.0, 100.0 * self.done / self.expected)
        artifacts().update_progress_artifact(self._id, progress=value)

    def __exit__(self, *exc: object) -> None:
        progress.unsubscribe(self)
        if exc[0] is None:
            artifacts().update_progress_artifact(self._id, progress=100.0)


def publish_verification_report(outcomes: list[TenantOutcome]) -> None:
    """One markdown artifact for a run of verifications: a line per backup, failures first."""
    failed = sum(o.status == "failed" for o in outcomes)
    lines = [
        f"# Verification of {len(outcomes):,} backups",
        "",
        f"- {len(outcomes) - failed:,} passed, {failed:,} failed (download, hashes, a rolled-back restore)",
        "",
        "| tenant | backup | verdict | s | why |",
        "|---|---|---|---:|---|",
        *(
            f"| {o.tenant_name or o.tenant_id} (`{o.tenant_id}`) | `{o.backup_id}` | "
            f"{'failed' if o.status == 'failed' else 'passed'} | {o.seconds or 0:.2f} | "
            f"{(o.error or '').replace('|', '/')[:300]} |"
            for o in sorted(outcomes, key=lambda o: (o.status != "failed", o.tenant_name or o.tenant_id))
        ),
    ]
    artifacts().create_markdown_artifact(
        markdown="\n".join(lines), key="verify-backups", description=f"{failed:,} of {len(outcomes):,} failed"
    )


def publish_freshness_report(found: list[TenantStatus]) -> None:
    """One markdown artifact: every tenant's newest backup, its age against its promise, its
    verification and its last failure; those that need attention first."""
    attention = sum(s.state != "ok" for s in found)
    lines = [
        f"# Freshness of {len(found):,} tenants",
        "",
        f"- {attention:,} need attention",
        "",
        "| tenant | state | newest backup | age h | promised h | verified | why |",
        "|---|---|---|---:|---:|---|---|",
        *(
            f"| {s.tenant_name or s.tenant_id} (`{s.tenant_id}`) | {s.state} | "
            f"{f'{s.newest_at:%Y-%m-%d %H:%M}' if s.newest_at else '-'} | "
            f"{'-' if s.age_hours is None else f'{s.age_hours:.1f}'} | {s.promised_hours:g} | "
            f"{s.verification or '-'} | {'' if s.state == 'ok' else s.reason.replace('|', '/')[:300]} |"
            for s in found
        ),
    ]
    artifacts().create_markdown_artifact(
        markdown="\n".join(lines), key="tenant-freshness", description=f"{attention:,} of {len(found):,} need attention"
    )
