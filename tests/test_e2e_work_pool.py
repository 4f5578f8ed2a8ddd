"""End to end on a process work pool, as several machines would run it: a Prefect server, the
deployments of prefect.yaml (`prefect deploy --all`), two workers, one backup slot in the database
(TENANT_BACKUP_SLOTS=1), and backup-all-tenants dispatching one pool run per tenant."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import DemoDatabase
from tests.helpers import prefect_server, stop

ROOT = Path(__file__).resolve().parents[1]


def _prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def pool(crm_db: DemoDatabase) -> Iterator[dict[str, Any]]:
    store = Path(tempfile.mkdtemp(prefix="tb-pool-store-"))
    project = {
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TENANT_BACKUP_PROJECT_DIR": str(ROOT),
        "TENANT_BACKUP_DATABASE_URL": crm_db.url,
        "TENANT_BACKUP_STORAGE_URL": f"file://{store}",
        "TENANT_BACKUP_SLOTS": "1",  # one backup at a time on this database, whichever worker runs it
    }
    with prefect_server(**project) as (api, env):
        _prefect(env, "work-pool", "create", "tenant-backup", "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--all")
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tenant-backup", "--name", name],
                env=env,
                cwd=tempfile.mkdtemp(prefix=f"tb-{name}-"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in ("worker-a", "worker-b")
        ]
        try:
            yield {"api": api, "env": env, "store": store}
        finally:
            stop(*workers)


def test_prefect_yaml_declares_the_deployments_of_definitions_py() -> None:
    """prefect.yaml and deployments/definitions.py describe the same deployments and schedules."""
    from deployments import build_deployments

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    from_yaml = {}
    for d in declared:
        module, func = d["entrypoint"].split(":")
        flow = getattr(__import__(module.removesuffix(".py").replace("/", "."), fromlist=[func]), func)
        schedules = sorted(s.get("cron") or f"every {s['interval']} s" for s in d.get("schedules", []))
        from_yaml[f"{flow.name}/{d['name']}"] = schedules
    from_code = {}
    for deployment in build_deployments():
        from_code[f"{deployment.flow_name}/{deployment.name}"] = sorted(
            getattr(s.schedule, "cron", None) or f"every {int(s.schedule.interval.total_seconds())} s"
            for s in deployment.schedules or []
        )
    assert from_yaml == from_code


def test_backup_all_tenants_fans_out_over_the_pool_one_slot_at_a_time(
    pool: dict[str, Any], crm_db: DemoDatabase
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: pool["api"]}):
        with get_client(sync_client=True) as client:
            names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
        assert {
            "backup-all-tenants/every-12-hours",
            "backup-tenant/backup-now",
            "sync-schedules/every-5-minutes",
        } <= names
        run = run_deployment(
            "backup-all-tenants/every-12-hours",
            parameters={"profile": "crm", "force": True},
            timeout=600,
            poll_interval=2,
            as_subflow=False,
        )
        assert run.state is not None and run.state.is_completed(), run.state
        with get_client(sync_client=True) as client:
            children = [
                r for r in client.read_flow_runs() if r.parent_task_run_id is not None and r.deployment_id is not None
            ]
    assert len(children) == len(crm_db.tenants)
    assert all(c.state is not None and c.state.is_completed() for c in children)
    assert {c.work_pool_name for c in children} == {"tenant-backup"}

    with psycopg.connect(crm_db.url) as conn:
        spans = conn.execute(
            "SELECT tenant_id, started_at, completed_at FROM tenant_backup.backups WHERE status = 'completed' "
            "ORDER BY started_at"
        ).fetchall()
    assert sorted(s[0] for s in spans) == sorted(t.id for t in crm_db.tenants)
    # One slot: no two tenants' extraction and writing overlapped, whichever worker ran them.
    for before, after in itertools.pairwise(spans):
        assert before[2] <= after[1], (before, after)
