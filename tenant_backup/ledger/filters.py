"""What ``list`` filters the ledger's backups on, as one SQL condition."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel

__all__ = ["BackupFilter", "BackupStatus", "uuid_spelling"]

BackupStatus = Literal["pending", "in_progress", "completed", "failed"]


def uuid_spelling(text: str) -> str:
    """A uuid's canonical spelling (lower case, hyphens), anything else as it is."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


class BackupFilter(BaseModel):
    """What ``list`` may filter on; every field optional."""

    tenant_id: str | None = None
    status: BackupStatus | None = None
    backup_type: Literal["manual", "scheduled"] | None = None
    format: Literal["csv", "json", "sql"] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        conditions: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if self.tenant_id is not None:  # a uuid typed in capitals, or in braces, is the same tenant
            conditions.append(sql.SQL("tenant_id = ANY(%s)"))
            params.append(sorted({self.tenant_id, uuid_spelling(self.tenant_id)}))
        for column in ("status", "backup_type", "format"):
            value = getattr(self, column)
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.since is not None:
            conditions.append(sql.SQL("created_at >= %s"))
            params.append(self.since)
        if self.until is not None:
            conditions.append(sql.SQL("created_at < %s"))
            params.append(self.until)
        return sql.SQL(" AND ").join(conditions), tuple(params)
