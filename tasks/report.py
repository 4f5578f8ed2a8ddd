"""Reports that a run leaves in the Prefect UI."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tenant_backup.restore import RestorePlan
from tenant_backup.results import BackupResult, RestoreResult

__all__ = [
    "artifact_key",
    "plan_markdown",
    "publish_backup_report",
    "publish_restore_plan",
    "publish_restore_report",
]


def artifact_key(prefix: str, tenant_id: str) -> str:
    """A valid artifact key (``^[a-z0-9-]*$``) for one tenant, stable across runs (so versions pile up)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{tenant_id}".lower()).strip("-")[:100]


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
        "",
        "| table | rows |",
        "|---|---:|",
        *(f"| {name} | {rows:,} |" for name, rows in sorted(result.tables.items())),
    ]
    create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key("backup", result.tenant_id),
        description=f"Backup {result.backup_id} of tenant {result.tenant_id}",
    )


def plan_markdown(plan: RestorePlan, title: str) -> str:
    """The plan as markdown: per table rows to insert / update / delete, and effects outside."""
    lines = [
        f"## {title}",
        "",
        f"Backup `{plan.backup_id}` into tenant `{plan.tenant_id}`"
        + (f" (from tenant `{plan.source_tenant}`)" if plan.source_tenant != plan.tenant_id else "")
        + f", mode **{plan.mode}**. App triggers: {plan.triggers}.",
        "",
        "| table | rows in backup | insert | update | delete |",
        "|---|---:|---:|---:|---:|",
        *(f"| {t.table} | {t.rows:,} | {t.inserted:,} | {t.updated:,} | {t.deleted:,} |" for t in plan.tables),
    ]
    if plan.outside:
        lines += ["", "Rows outside the restore that the deletes reach:", ""]
        lines += [f"- {o.rows:,} row(s) of `{o.table}` via `{o.foreign_key}`: {o.action}" for o in plan.outside]
    for label, cols in (
        ("dropped since the backup (not restored)", plan.dropped_columns),
        ("added since the backup (take their default)", plan.added_columns),
    ):
        if cols:
            lines += ["", f"Columns {label}: " + "; ".join(f"{t}: {', '.join(c)}" for t, c in cols.items())]
    return "\n".join(lines)


def publish_restore_plan(plan: RestorePlan) -> None:
    """The plan as a table artifact (one row per table)."""
    create_table_artifact(
        table=[t.model_dump() for t in plan.tables],
        key=artifact_key("restore-plan", plan.tenant_id),
        description=plan_markdown(plan, title="Restore plan"),
    )


def publish_restore_report(result: RestoreResult, plan: RestorePlan) -> None:
    create_markdown_artifact(
        markdown=plan_markdown(plan, title=f"Restore {result.status} in {result.seconds:.2f} s"),
        key=artifact_key("restore", result.tenant_id),
        description=f"Restore of backup {result.backup_id} into tenant {result.tenant_id}",
    )
