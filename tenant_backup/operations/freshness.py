"""Does every tenant have a recent backup that really restores? (``tenant-backup status``, the
``check-freshness`` flow.)

For each tenant (those of the ledger and of its schedules, and, given a profile, every tenant of
the app, so that one never backed up shows): its newest completed backup and its age against what
its schedule promises (its most frequent active schedule: a day, a week, a month; otherwise
``TENANT_BACKUP_FRESHNESS_HOURS``, 24 h: a missed 12-hourly run is tolerated, two are not), plus an
hour of grace; the last verification of that backup; and its last failure. A tenant is ``ok``, or
``never`` backed up, ``stale``, ``failed`` (its newest backup attempt failed, or its newest
backup's last verification did), or ``erased`` yet still listed (by the app, or by backups an
unfinished erasure left).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel

from tenant_backup.operations.schedules import read_schedules

__all__ = ["TenantStatus", "tenant_statuses"]

GRACE = timedelta(hours=1)
_PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=31)}
State = Literal["ok", "never", "stale", "failed", "erased"]


class TenantStatus(BaseModel):
    tenant_id: str
    tenant_name: str | None = None
    state: State
    newest_backup_id: str | None = None
    newest_at: datetime | None = None
    age_hours: float | None = None
    promised_hours: float  # the newest completed backup is at most this old (grace included)
    promised_by: str  # the schedule that promises it, or the default
    verified_at: datetime | None = None
    verification: str | None = None
    verification_error: str | None = None
    last_failure_at: datetime | None = None
    last_failure: str | None = None
    erased_at: datetime | None = None

    @property
    def reason(self) -> str:
        """Why the tenant needs attention (``ok`` when it does not)."""
        if self.state == "erased":
            return (
                f"erased on {self.erased_at:%Y-%m-%d %H:%M} UTC, yet still listed: delete its rows from the app (or "
                "run erase-tenant again if backups of it remain)"
            )
        if self.state == "never":
            return "no completed backup"
        if self.state == "stale":
            return f"newest backup {self.age_hours:.1f} h old; {self.promised_hours:g} h promised ({self.promised_by})"
        if self.state == "failed":
            if self.last_failure_at and self.newest_at and self.last_failure_at > self.newest_at:
                return f"its last backup failed ({self.last_failure_at:%Y-%m-%d %H:%M} UTC): {self.last_failure}"
            return f"its newest backup failed verification: {self.verification_error}"
        return "ok"


_NEWEST = """
SELECT t.tenant_id, c.id::text AS newest_backup_id, c.completed_at AS newest_at, c.verified_at, c.verification,
       c.verification_error, c.metadata ->> 'tenant_name' AS tenant_name,
       f.created_at AS last_failure_at, f.error_message AS last_failure
FROM (SELECT DISTINCT tenant_id FROM {backups} UNION SELECT tenant_id FROM {schedules}) t
LEFT JOIN LATERAL (SELECT * FROM {backups} b WHERE b.tenant_id = t.tenant_id AND b.status = 'completed'
                   ORDER BY b.completed_at DESC LIMIT 1) c ON true
LEFT JOIN LATERAL (SELECT * FROM {backups} b WHERE b.tenant_id = t.tenant_id AND b.status = 'failed'
                   ORDER BY b.created_at DESC LIMIT 1) f ON true
"""


def tenant_statuses(
    conn: psycopg.Connection,
    schema: str,
    *,
    now: datetime,
    default_hours: float,
    app_tenants: dict[str, str | None] | None = None,
) -> list[TenantStatus]:
    """Every tenant's status, the ones that need attention first (then by id)."""
    query = sql.SQL(_NEWEST).format(
        backups=sql.Identifier(schema, "backups"), schedules=sql.Identifier(schema, "backup_schedules")
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = {r["tenant_id"]: r for r in cur.execute(query)}
        erased = {
            r["tenant_id"]: r["destroyed_at"]
            for r in cur.execute(
                sql.SQL("SELECT tenant_id, destroyed_at FROM {} WHERE destroyed_at IS NOT NULL").format(
                    sql.Identifier(schema, "tenant_keys")
                )
            )
        }
    valid, _ = read_schedules(conn, schema)
    promises: dict[str, tuple[timedelta, str]] = {}
    for s in valid:
        if s.actif and (s.tenant_id not in promises or _PERIODS[s.frequence] < promises[s.tenant_id][0]):
            promises[s.tenant_id] = (_PERIODS[s.frequence], f"schedule {s.nom!r}, {s.frequence}")
    found: list[TenantStatus] = []
    for tenant_id in sorted({*rows, *(app_tenants or {})}):
        row = rows.get(tenant_id, {})
        period, by = promises.get(tenant_id, (timedelta(hours=default_hours), f"default {default_hours:g} h"))
        newest, failure_at = row.get("newest_at"), row.get("last_failure_at")
        age = now - newest if newest else None
        state: State = "ok"
        if tenant_id in erased:
            state = "erased"
        elif newest is None:
            state = "never"
        elif (failure_at and failure_at > newest) or row.get("verification") == "failed":
            state = "failed"
        elif age is not None and age > period + GRACE:
            state = "stale"
        found.append(
            TenantStatus(
                tenant_id=tenant_id,
                tenant_name=(app_tenants or {}).get(tenant_id) or row.get("tenant_name"),
                state=state,
                newest_backup_id=row.get("newest_backup_id"),
                newest_at=newest,
                age_hours=round(age.total_seconds() / 3600, 2) if age is not None else None,
                promised_hours=(period + GRACE).total_seconds() / 3600,
                promised_by=by,
                verified_at=row.get("verified_at"),
                verification=row.get("verification"),
                verification_error=row.get("verification_error"),
                last_failure_at=failure_at,
                last_failure=row.get("last_failure"),
                erased_at=erased.get(tenant_id),
            )
        )
    order = {"failed": 0, "erased": 1, "never": 2, "stale": 3, "ok": 4}
    return sorted(found, key=lambda s: (order[s.state], s.tenant_id))
