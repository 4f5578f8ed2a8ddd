"""What flows return: small, JSON-ready summaries (the CLI prints them with --json). Plain data:
it imports no stage, so that every stage and every entry point may use it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["Approval", "BackupResult", "RestoreResult", "TableCounts", "TenantOutcome"]


class BackupResult(BaseModel):
    backup_id: str
    status: Literal["completed"] = "completed"
    tenant_id: str
    tenant_name: str | None
    storage_path: str
    checksum: str
    record_count: int
    file_size: int
    type: str
    categories: list[str]
    tables: dict[str, int]
    seconds: float


class TenantOutcome(BaseModel):
    tenant_id: str
    status: Literal["completed", "failed", "skipped"]
    backup_id: str | None = None
    error: str | None = None
    flow_run: str | None = None  # when the tenant ran as a deployment run (on a work pool)


class Approval(BaseModel):
    """Who approved a restore, and why."""

    approver: str
    reason: str = ""


class TableCounts(BaseModel):
    rows: int
    inserted: int
    updated: int
    deleted: int
    matched_by: str = "key"  # "key (id)", or "rows" for a table without a key (a multiset of rows)


class RestoreResult(BaseModel):
    """What the restore (or its dry run, or a verify) did, per table."""

    status: Literal["completed", "planned", "verified"]
    backup_id: str
    tenant_id: str
    source_tenant: str
    mode: Literal["replace", "merge"]
    applied: bool
    tables: dict[str, TableCounts]
    outside: list[dict[str, object]]
    missing_references: list[dict[str, object]] = []
    dropped_columns: dict[str, list[str]]
    added_columns: dict[str, list[str]]
    triggers: str
    seconds: float
