"""Which backups to keep: restic's ``forget`` model over the ledger (pure functions).

Per tenant, over its completed and failed backups, newest first:

- **limits** (seed 001: at most 50 backups, none older than 7 days): a backup beyond
  ``max_backups`` or older than its age limit goes, unless a keep rule or the guard keeps it.
  The age limit is the backup's schedule's ``retention_jours`` when a schedule made it, else
  ``max_age_days``;
- **keep rules** (restic's ``--keep-daily/-weekly/-monthly N``): the newest completed backup of
  each of the last N days / ISO weeks / months that have one is kept whatever its age;
- **guard**: the tenant's newest completed *full* backup is always kept (its newest backup when
  it has no full one): a partial backup cannot bring the whole tenant back;
- failed rows never count toward ``max_backups`` and are kept only within the age limit;
- **chains** go as a whole: a kept incremental keeps its parent, and so on to its full base.

Pending and running backups are never touched. Every decision says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from tenant_backup.ledger import BackupRow
from tenant_backup.settings import Settings

__all__ = ["Decision", "RetentionPolicy", "decide"]


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_backups: int | None = Field(50, ge=1, description="Per tenant (seed 001: 50). Empty: no count limit.")
    max_age_days: int | None = Field(7, ge=1, description="Default age limit (seed 001: 7). Empty: none.")
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)
    keep_monthly: int = Field(0, ge=0)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: int | None) -> RetentionPolicy:
        """The ``TENANT_BACKUP_MAX_BACKUPS`` … ``KEEP_MONTHLY`` settings, with overrides where given."""
        values = {name: getattr(settings, name) for name in cls.model_fields}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)


class Decision(BaseModel):
    backup_id: str
    tenant_id: str
    created_at: datetime
    status: str
    storage_path: str | None
    keep: bool
    reason: str


def _buckets(rows: list[BackupRow], count: int, key: str) -> dict[str, str]:
    """restic's keep-within-buckets: the newest backup of each of the last ``count`` buckets."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    for row in rows:
        moment = row.created_at
        bucket = {
            "daily": moment.strftime("%Y-%m-%d"),
            "weekly": "{}-W{:02d}".format(*moment.isocalendar()[:2]),
            "monthly": moment.strftime("%Y-%m"),
        }[key]
        if bucket in seen:
            continue
        if len(seen) == count:
            break
        seen.add(bucket)
        kept[row.id] = f"{key} {bucket}"
    return kept


def decide(
    rows: Iterable[BackupRow], policy: RetentionPolicy, schedule_days: dict[str, int], now: datetime
) -> list[Decision]:
    """Keep or delete each finished backup of the given rows (any tenants), with a reason."""
    by_tenant: dict[str, list[BackupRow]] = {}
    for row in rows:
        if row.status in ("completed", "failed"):
            by_tenant.setdefault(row.tenant_id, []).append(row)
    decisions: list[Decision] = []
    for tenant_rows in by_tenant.values():
        tenant_rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        completed = [r for r in tenant_rows if r.status == "completed"]
        kept: dict[str, str] = {}
        for key, count in (
            ("monthly", policy.keep_monthly),
            ("weekly", policy.keep_weekly),
            ("daily", policy.keep_daily),
        ):
            if count:
                kept.update(_buckets(completed, count, key))
        # What can bring the whole tenant back always stays: its newest full backup (a partial one
        # holds some categories only), or, when it has none, its newest backup.
        newest_full = next((r for r in completed if _whole(r)), None)
        if newest_full is not None:
            kept[newest_full.id] = (
                "newest full backup of the tenant"
                if newest_full.type == "full"
                else "newest backup that brings the whole tenant back (an incremental: its chain stays with it)"
            )
        elif completed:
            kept[completed[0].id] = "newest completed backup of the tenant (it has no full one)"
        rank = 0
        tenant_decisions: list[Decision] = []
        for row in tenant_rows:
            days = schedule_days.get(row.schedule_id or "", policy.max_age_days)
            too_old = days is not None and row.created_at < now - timedelta(days=days)
            if row.status == "completed":
                rank += 1
            too_many = row.status == "completed" and policy.max_backups is not None and rank > policy.max_backups
            if row.id in kept:
                keep, reason = True, kept[row.id]
            elif too_old:
                keep, reason = False, f"older than {days} days"
            elif too_many:
                keep, reason = False, f"beyond the newest {policy.max_backups}"
            else:
                keep, reason = True, "within the limits"
            tenant_decisions.append(
                Decision(
                    backup_id=row.id,
                    tenant_id=row.tenant_id,
                    created_at=row.created_at,
                    status=row.status,
                    storage_path=row.storage_path,
                    keep=keep,
                    reason=reason,
                )
            )
        decisions += _keep_chains(tenant_decisions, {r.id: r for r in tenant_rows})
    return decisions


def _whole(row: BackupRow) -> bool:
    """The backup brings the whole tenant back: a full one, or an incremental of a full chain."""
    return row.type == "full" or (row.type == "incremental" and row.metadata.get("scope_type") == "full")


def _keep_chains(decisions: list[Decision], rows: dict[str, BackupRow]) -> list[Decision]:
    """Keep the ancestors of every kept incremental (decisions newest first: children first)."""
    needed: dict[str, str] = {}
    out: list[Decision] = []
    for d in decisions:
        if not d.keep and d.backup_id in needed:
            d = d.model_copy(update={"keep": True, "reason": needed[d.backup_id]})
        parent = rows[d.backup_id].parent_id
        if d.keep and parent is not None:
            needed[parent] = f"needed by incremental {d.backup_id} (a chain goes as a whole)"
        out.append(d)
    return out
