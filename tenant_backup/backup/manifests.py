"""The manifest of a backup: what its artifact holds, from its plan, its snapshot and its parts."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tenant_backup.artifact.manifest import ARTIFACT_VERSION, INCREMENTAL_VERSION, Manifest, TableManifest
from tenant_backup.backup.extract import TablePart
from tenant_backup.backup.steps import BackupPlan
from tenant_backup.locks import Snapshot
from tenant_backup.segments import entry_name
from tenant_backup.tenancy.catalog import TableScope

__all__ = ["build_manifest", "tool_version"]


def tool_version() -> str:
    try:
        return version("tenant-backup")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def build_manifest(plan: BackupPlan, backup_id: str, snapshot: Snapshot, parts: list[TablePart]) -> Manifest:
    by_table = {p.table: p for p in parts}
    tables = _distinct_entries(
        {s.table: _table_manifest(plan, s, by_table[s.table]) for s in sorted(plan.tables, key=lambda s: s.table)}
    )
    parent = plan.chain.parent if plan.chain else None
    return Manifest(
        version=INCREMENTAL_VERSION if parent else ARTIFACT_VERSION,
        backup_id=backup_id,
        date=snapshot.taken_at,
        database=plan.database,
        tenant_id=plan.request.tenant_id,
        tenant_column=plan.tenant_column,
        tenant_name=plan.tenant_name,
        profile=plan.profile,
        profile_doc=plan.profile_doc,
        db_schema=plan.db_schema,
        type=plan.type,
        categories=plan.categories,
        artifact_format=plan.request.format,
        compression=plan.request.compression,
        compression_level=plan.request.level,
        table_order=plan.table_order,
        tables=tables,
        total_records=sum(p.rows for p in parts),
        tables_count=len(parts),
        size_bytes=sum(p.size for p in parts),
        schema_fingerprint=plan.schema_fingerprint,
        server_version=snapshot.server_version,
        tool_version=tool_version(),
        left_out=plan.left_out,
        kind="incremental" if parent else "full",
        parent_id=parent.backup_id if parent else None,
        base_id=parent.base_id if parent else None,
        chain_seed=plan.chain.seed if plan.chain else None,
    )


def _distinct_entries(tables: dict[str, TableManifest]) -> dict[str, TableManifest]:
    """ZIP entry names that stay apart where names are compared without case (an archive
    unpacked on macOS or Windows: tables ``Ventes`` and ``ventes``), and from another table's keys
    file (a table named ``x.keys`` beside ``x``): a later one gets ``~2``, ``~3``… before its
    suffix. The manifest records each entry, so a reader needs no rule."""
    taken: set[str] = set()

    def unique(name: str | None, suffix: str) -> str | None:
        if name is None:
            return None
        stem, n, candidate = name.removesuffix(suffix), 1, name
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem}~{n}{suffix}"
        taken.add(candidate.casefold())
        return candidate

    return {
        table: entry.model_copy(
            update={"file": unique(entry.file, ".csv"), "keys_file": unique(entry.keys_file, ".keys.csv")}
        )
        for table, entry in tables.items()
    }


def _table_manifest(plan: BackupPlan, scope: TableScope, part: TablePart) -> TableManifest:
    keys = part.key_state
    return TableManifest(
        file=f"{entry_name(scope.table)}.csv" if plan.request.format == "csv" else None,
        rows=part.rows,
        size=part.size,
        compressed_size=part.compressed_size,
        sha256=part.sha256,
        newlines=part.newlines,
        columns=list(scope.columns),
        primary_key=list(scope.primary_key),
        scope=scope.describe(),
        content="changes" if part.changes else "rows",
        state_rows=keys.rows if keys and part.changes else None,
        buckets=keys.buckets if keys else None,
        key_columns=list(scope.key) if keys else None,
        key_digest=keys.digest if keys else None,
        keys_file=f"{entry_name(scope.table)}.keys.csv" if keys and keys.keys_path else None,
        keys_sha256=keys.keys_sha256 if keys else None,
        keys_size=keys.keys_size if keys else 0,
    )
