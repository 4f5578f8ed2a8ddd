"""What flows return: small, JSON-ready summaries (the CLI prints them with --json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["BackupResult", "TenantOutcome"]


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
