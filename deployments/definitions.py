"""Every deployment of tenant-backup.

``tenant-backup serve`` serves them all from one process (the embedded default). The apps
trigger restores through the Prefect API: ``POST /api/deployments/{id}/create_flow_run`` on
``restore-backup/on-demand``, or ``run_deployment("restore-backup/on-demand", parameters=...)``.
"""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.schedules import Cron

from flows.backup import backup_all_tenants, backup_tenant
from flows.restore import restore_backup, verify_backup

__all__ = ["DEPLOYMENTS", "build_deployments", "serve_all"]

# flow name / deployment name, as run_deployment and the REST API name them.
DEPLOYMENTS = {
    "backup_all": "backup-all-tenants/every-12-hours",
    "backup": "backup-tenant/on-demand",
    "restore": "restore-backup/on-demand",
    "verify": "verify-backup/on-demand",
}


def build_deployments(*, timezone: str = "UTC", backup_cron: str = "0 */12 * * *", profile: str = "pos") -> list[Any]:
    """The deployments, with seed 001's pg_cron schedule (every 12 hours) on backup-all-tenants."""
    return [
        backup_all_tenants.to_deployment(
            name="every-12-hours",
            schedules=[Cron(backup_cron, timezone=timezone)],
            parameters={"profile": profile, "backup_type": "scheduled"},
            description="Back up every tenant (replaces seed 001's pg_cron job).",
        ),
        backup_tenant.to_deployment(
            name="on-demand", parameters={"profile": profile}, description="Back up one tenant now."
        ),
        restore_backup.to_deployment(
            name="on-demand", description="Restore a backup; apps trigger it through the Prefect API."
        ),
        verify_backup.to_deployment(name="on-demand", description="Check a backup without restoring it."),
    ]


def serve_all(**kwargs: Any) -> None:
    """Serve every deployment from this process until it is stopped."""
    serve(*build_deployments(**kwargs))
