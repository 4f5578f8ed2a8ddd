"""What flows return: small, JSON-ready summaries (the CLI prints them with --json). Plain data:
it imports no stage, so that every stage and every entry point may use it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

__all__ = [
    "Approval",
    "BackupResult",
    "RestoreResult",
    "SpaceNeed",
    "TableCounts",
    "TenantOutcome",
    "human_size",
    "pg_size",
]


def _scaled(size: int, base: int) -> tuple[float, str]:
    """``size`` in the largest of kB, MB, GB, TB (powers of ``base``) that keeps it >= 1; "" for bytes."""
    value, unit = float(size), ""
    for larger in ("kB", "MB", "GB", "TB"):
        if value < base:
            break
        value, unit = value / base, larger
    return value, unit


def human_size(size: int | None) -> str:
    """``512 B``, ``1.5 MB``, ``2.1 GB`` (powers of 1000, as df -H); ``-`` for None."""
    if size is None:
        return "-"
    value, unit = _scaled(size, 1000)
    return f"{size} B" if not unit else f"{value:.1f} {unit}"


def pg_size(size: int) -> str:
    """A size as PostgreSQL writes its settings and messages: powers of 1024, ``64kB``, ``1.5GB``."""
    value, unit = _scaled(size, 1024)
    return f"{size} bytes" if not unit else (f"{value:.3g}" if value < 1000 else f"{value:.0f}") + unit


class SpaceNeed(BaseModel):
    """Room a restore needs on the database server (estimates, see restore/space.py) and what
    the server has, where this process can see it (None: not known from here)."""

    staging_bytes: int  # temporary tables holding the backup's rows
    temp_file_bytes: int  # the largest comparison's spill to temporary files (temp_file_limit)
    wal_bytes: int | None = None  # once the rows to write are counted
    temp_file_limit: int | None = None  # None: unlimited
    disk_free: int | None = None  # the data directory's volume
    wal_free: int | None = None  # pg_wal's volume
    wal_on_data_volume: bool = True

    def describe(self) -> str:
        parts = [f"about {pg_size(self.staging_bytes)} of staging in temporary tables"]
        if self.temp_file_bytes:
            parts.append(f"{pg_size(self.temp_file_bytes)} of temporary files")
        if self.wal_bytes is not None:
            parts.append(f"{pg_size(self.wal_bytes)} of WAL")
        free = f"; {pg_size(self.disk_free)} free on the server" if self.disk_free is not None else ""
        return ", ".join(parts) + free


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
    left_out: list[str] = []  # tables holding the tenant column that the backup does not hold
    encrypted_to: list[str] = []  # the age recipients of the artifact (none: not encrypted)
    parent_id: str | None = None  # an incremental's parent
    chain_note: str | None = None  # an incremental asked for, taken full: why


class TenantOutcome(BaseModel):
    """One tenant of a run of many: completed (its backup), skipped (throttled) or failed (why)."""

    tenant_id: str
    tenant_name: str | None = None
    status: Literal["completed", "failed", "skipped"]
    backup_id: str | None = None
    record_count: int | None = None
    file_size: int | None = None
    seconds: float | None = None
    error: str | None = None
    flow_run: str | None = None  # when the tenant ran as a deployment run (on a work pool)
    unlisted: bool = False  # an id that rows hold but the tenant table lacks: failed, its rows in no backup


class Approval(BaseModel):
    """A human's answer to a restore plan: approved or not, by whom, why, after how long."""

    approved: bool
    approver: str = ""
    reason: str = ""
    waited_seconds: float = 0.0
    timed_out: bool = False

    def describe(self) -> str:
        if self.timed_out:
            return f"no answer within {self.waited_seconds:.0f} s"
        verdict = "approved" if self.approved else "rejected"
        return f"{verdict} by {self.approver or 'someone'}" + (f": {self.reason}" if self.reason else "")


class TableCounts(BaseModel):
    rows: int
    inserted: int
    updated: int
    deleted: int
    matched_by: str = "key"  # "key (id)", or "rows" for a table without a key (a multiset of rows)
    staged: int | None = None  # rows of the backup staged: all, or (compared by lines) those that differed


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
    seconds: float  # working time: the wait for an approval is not in it
    approval: Approval | None = None
    tenant_name: str | None = None
    backup_date: datetime | None = None
    space: SpaceNeed | None = None
    chain: list[str] = []  # an incremental's: the backups it was rebuilt from, its base first
