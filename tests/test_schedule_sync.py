"""The schedule sync against a real Prefect API: backup_schedules rows become deployment
schedules, created / updated / removed, idempotent; invalid rows are reported and skipped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.backup import backup_tenant
from flows.maintenance import sync_schedules
from tenant_backup.ledger import migrate
from tenant_backup.operations.schedules import ScheduleRow, next_run
from tests.conftest import DemoDatabase

pytestmark = pytest.mark.usefixtures("prefect_api")

DEPLOYMENT = "backup-tenant/scheduled-sync-test"


def _schedules() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        return {s.slug: s for s in client.read_deployment_schedules(deployment.id)}


def _insert(conn: psycopg.Connection, tenant: str, **fields: Any) -> str:
    values = {"tenant_id": tenant, "nom": "sauvegarde", **fields}
    row = conn.execute(
        sql.SQL("INSERT INTO tenant_backup.backup_schedules ({}) VALUES ({}) RETURNING id::text").format(
            sql.SQL(", ").join(map(sql.Identifier, values)), sql.SQL(", ").join(sql.Placeholder() * len(values))
        ),
        list(values.values()),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_sync_makes_deployment_schedules_match_the_table(pos_db: DemoDatabase, env: Any) -> None:
    from psycopg.types.json import Jsonb

    env["use"](pos_db)
    backup_tenant.to_deployment(name=DEPLOYMENT.split("/")[1], parameters={"profile": "pos"}).apply()
    tenants = [t.id for t in pos_db.tenants]
    with psycopg.connect(pos_db.url, autocommit=True) as conn:
        migrate(conn, "tenant_backup")
        conn.execute("DELETE FROM tenant_backup.backup_schedules")
        daily = _insert(conn, tenants[0], frequence="daily", heure_execution="02:30")
        weekly = _insert(
            conn,
            tenants[1],
            frequence="weekly",
            heure_execution="23:00",
            jour_semaine=0,
            type="partial",
            categories=Jsonb(["ventes"]),
            format="json",
        )
        monthly = _insert(conn, tenants[2], frequence="monthly", heure_execution="04:00", jour_mois=30)
        inactive = _insert(conn, tenants[0], frequence="daily", heure_execution="05:00", actif=False)
        no_day = _insert(conn, tenants[1], frequence="weekly", heure_execution="06:00")
        bad_time = _insert(conn, tenants[2], frequence="daily", heure_execution="06:00:30")

    report = sync_schedules(deployment=DEPLOYMENT, timezone="Europe/Paris", profile="pos")
    assert {c.slug: c.action for c in report.changes} == {
        f"backup-schedule-{daily}": "created",
        f"backup-schedule-{weekly}": "created",
        f"backup-schedule-{monthly}": "created",
        f"backup-schedule-{monthly}-february": "created",
    }
    assert {bad.id: bad.error for bad in report.invalid}.keys() == {no_day, bad_time}
    errors = {bad.id: bad.error for bad in report.invalid}
    assert "jour_semaine" in errors[no_day] and "HH:MM" in errors[bad_time]

    schedules = _schedules()
    assert set(schedules) == {c.slug for c in report.changes}
    weekly_schedule = schedules[f"backup-schedule-{weekly}"]
    assert weekly_schedule.schedule.cron == "0 23 * * 0" and weekly_schedule.schedule.timezone == "Europe/Paris"
    assert weekly_schedule.parameters == {
        "tenant_id": tenants[1],
        "categories": ["ventes"],
        "format": "json",
        "backup_type": "scheduled",
        "schedule_id": weekly,
        "name": "sauvegarde",
        "profile": "pos",
    }
    assert schedules[f"backup-schedule-{monthly}-february"].schedule.cron == "0 4 L 2 *"
    with psycopg.connect(pos_db.url) as conn:
        stamped = dict(conn.execute("SELECT id::text, prochaine_execution FROM tenant_backup.backup_schedules"))
    row = ScheduleRow(id=daily, tenant_id=tenants[0], nom="nightly", frequence="daily", heure_execution="02:30")
    assert stamped[daily] == next_run(row, datetime.now(UTC), "Europe/Paris")
    assert stamped[inactive] is None and stamped[no_day] is None

    # Twice: nothing changes.
    again = sync_schedules(deployment=DEPLOYMENT, timezone="Europe/Paris", profile="pos")
    assert {c.action for c in again.changes} == {"unchanged"} and again.changed == 0
    assert {s.id for s in _schedules().values()} == {s.id for s in schedules.values()}

    # The app edits, deactivates and deletes rows: updated and removed.
    with psycopg.connect(pos_db.url, autocommit=True) as conn:
        conn.execute("UPDATE tenant_backup.backup_schedules SET heure_execution = '03:15' WHERE id = %s", (daily,))
        conn.execute("UPDATE tenant_backup.backup_schedules SET actif = false WHERE id = %s", (weekly,))
        conn.execute("UPDATE tenant_backup.backup_schedules SET jour_mois = 31 WHERE id = %s", (monthly,))
        conn.execute("UPDATE tenant_backup.backup_schedules SET actif = true WHERE id = %s", (inactive,))
    third = sync_schedules(deployment=DEPLOYMENT, timezone="Europe/Paris", profile="pos")
    assert {c.slug: c.action for c in third.changes} == {
        f"backup-schedule-{daily}": "updated",
        f"backup-schedule-{monthly}": "updated",
        f"backup-schedule-{inactive}": "created",
        f"backup-schedule-{weekly}": "removed",
        f"backup-schedule-{monthly}-february": "removed",
    }
    schedules = _schedules()
    assert schedules[f"backup-schedule-{daily}"].schedule.cron == "15 3 * * *"
    assert schedules[f"backup-schedule-{monthly}"].schedule.cron == "0 4 L * *"
    with psycopg.connect(pos_db.url) as conn:
        assert conn.execute(
            "SELECT prochaine_execution FROM tenant_backup.backup_schedules WHERE id = %s", (weekly,)
        ).fetchone() == (None,)
