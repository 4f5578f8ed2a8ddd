"""The automation that tells a person when backups go wrong: a failed or crashed run of a backup,
verification or freshness flow sends a notification through a block the operator configures
(Slack, e-mail, a webhook: any Prefect notification block), named by TENANT_BACKUP_NOTIFY_BLOCK as
``<block type slug>/<block name>`` (``slack-webhook/ops``). ``serve`` creates it; running it again
replaces it."""

from __future__ import annotations

import os

from prefect.automations import Automation, EventTrigger, SendNotification
from prefect.blocks.core import Block

__all__ = ["AUTOMATION_NAME", "WATCHED_FLOWS", "notify_on_failure"]

AUTOMATION_NAME = "tenant-backup: notify on failure"
WATCHED_FLOWS = ("backup-all-tenants", "backup-tenant", "verify-backups", "check-freshness")


def notify_on_failure(block: str | None = None) -> Automation | None:
    """Create (or replace) the automation; None when no notification block is named."""
    name = block or os.environ.get("TENANT_BACKUP_NOTIFY_BLOCK", "").strip()
    if not name:
        return None
    if "/" not in name:
        from tenant_backup.errors import ConfigurationError

        raise ConfigurationError(
            f"TENANT_BACKUP_NOTIFY_BLOCK={name!r}: name the block as <block type slug>/<name>, e.g. slack-webhook/ops"
        )
    loaded = Block.load(name)
    assert isinstance(loaded, Block)
    try:
        previous = Automation.read(name=AUTOMATION_NAME)
    except ValueError:
        previous = None  # none yet
    if isinstance(previous, Automation):
        previous.delete()
    automation = Automation(
        name=AUTOMATION_NAME,
        description="A backup, verification or freshness run failed: someone should look.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(WATCHED_FLOWS)},
            posture="Reactive",
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=loaded._block_document_id,
                subject="tenant-backup: {{ flow.name }} failed",
                body="Flow run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}",
            )
        ],
    )
    created = automation.create()
    assert isinstance(created, Automation)
    return created
