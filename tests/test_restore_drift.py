"""Schema drift between backup and restore: columns are matched by name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import RestoreRefusedError
from tests.conftest import DemoDatabase

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_added_column_takes_its_default_and_dropped_one_is_reported(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[0].id
    backup = backup_tenant(tenant_id=tenant, profile="crm", categories=["sales"], force=True)
    with crm_db.connect() as conn:
        conn.execute("ALTER TABLE leads ADD COLUMN priority integer NOT NULL DEFAULT 3")
        conn.execute("ALTER TABLE leads DROP COLUMN notes")
        conn.execute(
            "DELETE FROM leads WHERE company_id = %s AND id NOT IN (SELECT lead_id FROM contacts "
            "WHERE lead_id IS NOT NULL)",
            (tenant,),
        )
        conn.execute("UPDATE leads SET score = -5 WHERE company_id = %s", (tenant,))
    plan = restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
    assert plan.dropped_columns == {"leads": ["notes"]} and plan.added_columns == {"leads": ["priority"]}
    done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert done.tables["leads"].inserted > 0
    with crm_db.connect() as conn:
        scores = conn.execute("SELECT count(*) FROM leads WHERE company_id = %s AND score = -5", (tenant,)).fetchone()
        priorities = conn.execute("SELECT DISTINCT priority FROM leads WHERE company_id = %s", (tenant,)).fetchall()
    assert scores == (0,) and priorities == [(3,)]


def test_table_dropped_since_the_backup_is_refused_before_any_write(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="crm", categories=["projects"], force=True)
    with crm_db.connect() as conn:
        conn.execute("ALTER TABLE work_orders RENAME TO work_orders_old")
    try:
        with pytest.raises(RestoreRefusedError, match="work_orders of backup .* no longer exist"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        only = restore_backup(
            backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", tables=["projects", "project_tasks"]
        )
        assert set(only.tables) == {"projects", "project_tasks"}
    finally:
        with crm_db.connect() as conn:
            conn.execute("ALTER TABLE work_orders_old RENAME TO work_orders")


def test_restore_into_another_tenant_needs_target_tenant_and_rewrites_the_tenant_column(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    from tests.helpers import state_of
    from tests.test_restore import _wipe

    env["use"](pos_db)
    source = pos_db.tenants[1].id
    backup = backup_tenant(tenant_id=source, profile="pos", force=True)
    before = state_of(pos_db.url, "pos", source)
    _wipe(pos_db, "pos", source)  # the old établissement's rows are gone; a new one takes them over
    target = str(uuid.uuid4())
    with pos_db.connect() as conn:
        conn.execute("INSERT INTO etablissements (id, nom) VALUES (%s, 'Nouveau restaurant')", (target,))
    done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", target_tenant=target)
    assert done.tenant_id == target and done.source_tenant == source and "etablissements" not in done.tables
    after = state_of(pos_db.url, "pos", target)
    for table, data in before.items():
        if table != "etablissements":
            assert after[table] == data.replace(source.encode(), target.encode()), table
