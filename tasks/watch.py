"""Steps of the watch flows: which backups to verify, and every tenant's freshness (see tasks/step.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from blocks import database_url
from tasks.step import step
from tenant_backup import ledger
from tenant_backup.backup.steps import list_tenants
from tenant_backup.db import connect
from tenant_backup.ledger import BackupRow
from tenant_backup.operations.freshness import TenantStatus, tenant_statuses
from tenant_backup.settings import get_settings

__all__ = ["newest_backups", "statuses"]


@step("pick-backups-to-verify", summary=lambda rows: f"{len(rows)} backup(s), the least recently verified first")
def newest_backups(sample: int | None, database_block: str | None) -> list[BackupRow]:
    """Each tenant's newest completed backup, the least recently verified first; ``sample`` of them
    (a rotation: each run takes the ones verified longest ago), or all."""
    settings = get_settings()
    with connect(database_url(database_block), lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        rows = ledger.newest_completed(conn, settings.ledger_schema)
    return rows[:sample] if sample else rows


@step("tenant-statuses", summary=lambda found: f"{sum(s.state != 'ok' for s in found)} of {len(found)} need attention")
def statuses(profile: str | None, tenant_column: str | None, database_block: str | None) -> list[TenantStatus]:
    """Every tenant's newest backup against its schedule's promise, its verification, its last failure;
    with a profile or tenant column, the app's tenants that were never backed up too."""
    settings = get_settings()
    url = database_url(database_block)
    app = None
    if profile or tenant_column:
        app = {t.id: t.name for t in list_tenants(url, settings, profile, tenant_column).tenants}
    with connect(url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        return tenant_statuses(
            conn, settings.ledger_schema, now=datetime.now(UTC), default_hours=settings.freshness_hours, app_tenants=app
        )
