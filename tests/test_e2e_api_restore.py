"""End to end, as an app does it: a Prefect server, `tenant-backup serve` serving the deployments,
a backup and a restore triggered through the Prefect REST API (what curl does) and with
run_deployment, then the data checked in PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments import DEPLOYMENTS
from tests.conftest import DemoDatabase
from tests.helpers import prefect_server, state_of, stop, wait_for
from tests.test_restore import MUTATIONS


@pytest.fixture(scope="module")
def served(crm_db: DemoDatabase) -> Iterator[dict[str, Any]]:
    """A `prefect server start` and a `tenant-backup serve` process, both on loopback."""
    store = Path(tempfile.mkdtemp(prefix="tb-e2e-store-"))
    settings = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    with prefect_server(**settings) as (api, env):
        serving = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tenant_backup.cli",
                "serve",
                "--db",
                crm_db.url,
                "--storage",
                f"file://{store}",
                "--profile",
                "crm",
                "--timezone",
                "Europe/Paris",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ids = {
                name: wait_for(
                    f"deployment {name}",
                    lambda name=name: httpx.get(f"{api}/deployments/name/{name}", timeout=2).json().get("id"),
                )
                for name in DEPLOYMENTS.values()
            }
            yield {"api": api, "ids": ids, "store": store}
        finally:
            stop(serving)


def _run_through_rest(served: dict[str, Any], deployment: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """What the README's curl does: create a flow run of a deployment, then poll it to the end."""
    api = served["api"]
    url = f"{api}/deployments/{served['ids'][deployment]}/create_flow_run"
    for _ in range(20):  # a busy SQLite-backed server answers 503 for a moment: try again, as an app should
        response = httpx.post(url, json={"parameters": parameters}, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(1)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()
        return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    result: dict[str, Any] = wait_for(f"flow run {run_id}", finished, timeout=120)
    return result


def test_app_triggers_backup_and_restore_through_the_prefect_api(served: dict[str, Any], crm_db: DemoDatabase) -> None:
    tenant = crm_db.tenants[0].id
    before = state_of(crm_db.url, "crm", tenant)
    backup_run = _run_through_rest(served, "backup-tenant/backup-now", {"tenant_id": tenant, "force": True})
    assert backup_run["state"]["type"] == "COMPLETED", backup_run["state"]
    with crm_db.connect() as conn:
        backup_id = conn.execute(
            "SELECT id::text FROM tenant_backup.backups WHERE tenant_id = %s AND status = 'completed' "
            "ORDER BY created_at DESC LIMIT 1",
            (tenant,),
        ).fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            for statement in MUTATIONS["crm"]:
                conn.execute(statement, {"t": tenant})
    assert state_of(crm_db.url, "crm", tenant) != before

    refused = _run_through_rest(served, "restore-backup/restore-now", {"backup_id": backup_id, "confirm": "yes"})
    assert refused["state"]["type"] == "FAILED" and state_of(crm_db.url, "crm", tenant) != before

    restored = _run_through_rest(
        served,
        "restore-backup/restore-now",
        {"backup_id": backup_id, "confirm": "RESTORE", "requested_by": crm_db.tenants[0].admin_id},
    )
    assert restored["state"]["type"] == "COMPLETED", restored["state"]
    assert state_of(crm_db.url, "crm", tenant) == before


def test_run_deployment_from_python_verifies_a_backup(served: dict[str, Any], crm_db: DemoDatabase) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tenant = crm_db.tenants[1].id
    backup_run = _run_through_rest(served, "backup-tenant/backup-now", {"tenant_id": tenant, "force": True})
    assert backup_run["state"]["type"] == "COMPLETED"
    with crm_db.connect() as conn:
        backup_id = conn.execute(
            "SELECT id FROM tenant_backup.backups WHERE tenant_id = %s ORDER BY created_at DESC LIMIT 1", (tenant,)
        ).fetchone()[0]  # type: ignore[index]
    with temporary_settings(updates={PREFECT_API_URL: served["api"]}):
        run = run_deployment(
            "verify-backup/verify-now",
            parameters={"backup_id": str(backup_id)},
            timeout=120,
            poll_interval=1,
            as_subflow=False,
        )
    assert run.state is not None and run.state.is_completed(), run.state
    assert isinstance(uuid.UUID(str(run.id)), uuid.UUID)


def test_serving_creates_every_deployment_with_its_schedule(served: dict[str, Any]) -> None:
    def schedules(name: str) -> list[dict[str, Any]]:
        deployment = httpx.get(f"{served['api']}/deployments/{served['ids'][name]}", timeout=5).json()
        return [s["schedule"] for s in deployment["schedules"]]

    assert schedules("backup-all-tenants/every-12-hours") == [
        {"cron": "0 */12 * * *", "timezone": "Europe/Paris", "day_or": True}
    ]
    assert schedules("prune-backups/nightly-retention") == [
        {"cron": "30 3 * * *", "timezone": "Europe/Paris", "day_or": True}
    ]
    [sync] = schedules("sync-schedules/every-5-minutes")
    assert sync["interval"] == 300.0
    assert schedules("backup-tenant/app-schedules") == []  # the sync adds one per backup_schedules row
    for name in ("backup-tenant/backup-now", "restore-backup/restore-now", "verify-backup/verify-now"):
        assert schedules(name) == []


def test_a_row_the_app_writes_becomes_a_scheduled_backup_that_runs(
    served: dict[str, Any], crm_db: DemoDatabase
) -> None:
    """No redeploy: the app inserts a backup_schedules row, the sync (its own deployment) turns it
    into a schedule, Prefect's scheduler starts the run, the served process backs the tenant up."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tenant_backup.ledger import migrate

    tenant = crm_db.tenants[2].id
    local = datetime.now(ZoneInfo("Europe/Paris")) + timedelta(minutes=1)
    if local.second > 30:
        local += timedelta(minutes=1)
    with crm_db.connect() as conn:
        migrate(conn, "tenant_backup")
        schedule = conn.execute(
            "INSERT INTO tenant_backup.backup_schedules (tenant_id, nom, frequence, heure_execution) "
            "VALUES (%s, 'every day', 'daily', %s) RETURNING id::text",
            (tenant, f"{local:%H:%M}"),
        ).fetchone()[0]  # type: ignore[index]
    synced = _run_through_rest(served, "sync-schedules/every-5-minutes", {})
    assert synced["state"]["type"] == "COMPLETED", synced["state"]

    def made() -> Any:
        with crm_db.connect() as conn:
            return conn.execute(
                "SELECT b.backup_type, s.derniere_execution, s.prochaine_execution FROM tenant_backup.backups b "
                "JOIN tenant_backup.backup_schedules s ON s.id = b.schedule_id "
                "WHERE b.schedule_id = %s AND b.status = 'completed'",
                (schedule,),
            ).fetchone()

    try:
        backup_type, last, following = wait_for("the scheduled backup", made, timeout=150)
    except AssertionError as exc:  # say what the server had: the schedule, and the runs it made of it
        api = served["api"]
        deployment = httpx.get(f"{api}/deployments/{served['ids']['backup-tenant/app-schedules']}", timeout=5).json()
        runs = httpx.post(
            f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}}, timeout=5
        ).json()
        raise AssertionError(
            f"no scheduled backup at {local:%H:%M} Paris: schedules {deployment['schedules']}, "
            f"runs {[(r['name'], r['state']['type'], r['expected_start_time']) for r in runs]}"
        ) from exc
    assert backup_type == "scheduled" and last is not None and following > last
