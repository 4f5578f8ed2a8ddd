"""Reports that a run leaves in the Prefect UI."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact

from tenant_backup.results import BackupResult

__all__ = ["artifact_key", "publish_backup_report"]


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
