"""What a crash leaves behind, with real ``kill -9`` of real CLI processes: the backup slot and the
tenant lock come back with the dead session, the dead run's ledger row or restore log is reaped to
failed by the tenant's next run, and its Prefect flow run is marked Crashed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import TenantBusyError
from tenant_backup.locks import SLOT_LOCK, SLOT_WAIT, TENANT_LOCK, tenant_lock
from tests.conftest import DemoDatabase
from tests.helpers import state_of, wait_for

pytestmark = pytest.mark.usefixtures("prefect_api")


class Cli:
    """A ``python -m tenant_backup.cli`` process against the session's Prefect API."""

    def __init__(self, prefect_api: str, tmp_path: Path, *args: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANT_BACKUP_")}
        env.update({"PREFECT_API_URL": prefect_api, **{f"TENANT_BACKUP_{k.upper()}": v for k, v in settings.items()}})
        name = uuid.uuid4().hex[:8]
        self.stdout = tmp_path / f"{name}.out"
        self.stderr = tmp_path / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tenant_backup.cli", *args], stdout=out, stderr=err, env=env
            )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        return code, self.stdout.read_text(), self.stderr.read_text()


@pytest.fixture
def cli(prefect_api: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Cli] = []

    def start(*args: str, **settings: str) -> Cli:
        started.append(Cli(prefect_api, tmp_path, *args, **settings))
        return started[-1]

    yield start
    for c in started:  # only the processes this test started
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)


def _one(db: DemoDatabase, query: str, *params: Any) -> Any:
    with db.connect() as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _session(db: DemoDatabase, name: str, extra: str = "true") -> int | None:
    """The pid of the session named ``name`` when ``extra`` (about ``a``, its pg_stat_activity row) holds."""
    return _one(  # type: ignore[no-any-return]
        db,
        f"SELECT a.pid FROM pg_stat_activity a WHERE a.datname = current_database() AND a.application_name = %s "
        f"AND {extra}",
        name,
    )


def _held(db: DemoDatabase, key: str, pid: int | None = None) -> bool:
    """Whether a session (``pid``, or any) holds an advisory lock (hashtext(key), …) in this database."""
    return bool(
        _one(
            db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = hashtext(%s)::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND (%s::int IS NULL OR pid = %s::int)",
            key,
            pid,
            pid,
        )
    )


def _rows(db: DemoDatabase, table: str, tenant: str) -> list[dict[str, Any]]:
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        try:
            return cur.execute(
                f"SELECT * FROM tenant_backup.{table} WHERE tenant_id = %s ORDER BY created_at", (tenant,)
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def _flow_run_state(flow_run_id: str) -> State[Any]:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    assert state is not None
    return state


def _blocking(db: DemoDatabase, table: str, mode: str, name: str = "blocker") -> psycopg.Connection:
    """A session named ``name`` holding ``LOCK TABLE table IN mode MODE`` until it rolls back."""
    conn = db.connect(application_name=name)
    conn.execute("BEGIN")
    conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
    return conn


def test_backup_killed_holding_the_only_slot_gives_it_back_and_the_next_backup_reaps_it(
    pos_db: DemoDatabase, env: dict[str, Any], cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0].id
    name = f"tenant-backup backup {tenant}"
    blocker = _blocking(pos_db, "clients", "ACCESS EXCLUSIVE")  # the backup will wait for it, slot in hand
    try:
        backup = cli(
            "backup", "--db", pos_db.url, "--storage", env["store"], "--tenant", tenant, "--profile", "pos",
            "--force", "--json", slots="1", lock_timeout="60s",
        )  # fmt: skip
        pid = wait_for(
            "the backup to hold the only slot and wait for table clients",
            lambda: _session(pos_db, name, "a.wait_event_type = 'Lock'") if _held(pos_db, SLOT_LOCK) else None,
        )
        assert _held(pos_db, SLOT_LOCK, pid)
        stale = _rows(pos_db, "backups", tenant)[-1]
        assert stale["status"] == "pending" and stale["metadata"]["flow_run_id"]
        assert _flow_run_state(stale["metadata"]["flow_run_id"]).type == StateType.RUNNING
        backup.kill9()
        # Its session ends (and frees the slot and the tenant lock) though it was waiting for a lock.
        wait_for("the dead backup's session to end", lambda: not _session(pos_db, name), timeout=20)
        assert not _held(pos_db, SLOT_LOCK)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    monkeypatch.setenv("TENANT_BACKUP_SLOTS", "1")
    monkeypatch.setenv("TENANT_BACKUP_SLOT_TIMEOUT", "5")  # a slot still taken would fail it within 5 s
    done = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    rows = {str(r["id"]): r for r in _rows(pos_db, "backups", tenant)}
    assert rows[done.backup_id]["status"] == "completed"
    reaped = rows[str(stale["id"])]
    assert reaped["status"] == "failed" and "died" in reaped["error_message"]
    assert f"reaped by the next backup of tenant {tenant}" in reaped["error_message"]
    state = _flow_run_state(stale["metadata"]["flow_run_id"])
    assert state.type == StateType.CRASHED
    assert state.message == f"process died; reaped by the next backup of tenant {tenant}"


def test_backup_waiting_for_a_slot_is_bounded_names_the_holder_and_leaves_nothing_when_killed(
    pos_db: DemoDatabase, env: dict[str, Any], cli: Any
) -> None:
    waiter, bounded = pos_db.tenants[1].id, pos_db.tenants[2].id
    before = {t: len(_rows(pos_db, "backups", t)) for t in (waiter, bounded)}
    holder = psycopg.connect(pos_db.url, autocommit=True, application_name="nightly-report")
    try:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s), 0)", (SLOT_LOCK,))
        common = ("--db", pos_db.url, "--storage", env["store"], "--profile", "pos", "--force", "--json")
        killed = cli("backup", "--tenant", waiter, *common, slots="1", slot_timeout="120")
        timed_out = cli("backup", "--tenant", bounded, *common, slots="1", slot_timeout="3")
        waiting = f"{SLOT_WAIT} {waiter}"  # pg_stat_activity shows who waits for a slot
        wait_for("the first backup to wait for a slot", lambda: _session(pos_db, waiting))
        killed.kill9()
        wait_for("the killed waiter's session to end", lambda: not _session(pos_db, waiting), timeout=20)
        code, out, err = timed_out.finish()
    finally:
        holder.close()
    lines = err.strip().splitlines()
    assert code == 2 and json.loads(out)["status"] == "error", err
    said = [
        line for line in lines if line.startswith(f"tenant-backup: backup of tenant {bounded} waits for a backup slot")
    ]
    assert len(said) == 1 and "'nightly-report' (pid" in said[0] and "up to 3 s" in said[0]
    assert lines[-1].startswith(f"error: no backup slot of database {pos_db.name} came free within 3 s for tenant ")
    assert bounded in lines[-1] and "'nightly-report' (pid" in lines[-1] and "TENANT_BACKUP_SLOT_TIMEOUT" in lines[-1]
    # Neither run wrote a ledger row or kept a lock: the tenant lock comes after the slot.
    assert {t: len(_rows(pos_db, "backups", t)) for t in (waiter, bounded)} == before
    assert not _held(pos_db, TENANT_LOCK)


def test_restore_killed_during_its_apply_is_left_running_changes_nothing_and_the_next_restore_reaps_it(
    pos_db: DemoDatabase, env: dict[str, Any], cli: Any
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["ventes"], force=True)
    backed_up = state_of(pos_db.url, "pos", tenant)
    with pos_db.connect() as conn, conn.transaction():
        sold = "SELECT id FROM ventes WHERE etablissement_id = %(t)s ORDER BY id LIMIT 5"
        conn.execute(f"DELETE FROM lignes_vente WHERE vente_id IN ({sold})", {"t": tenant})
        conn.execute(f"DELETE FROM paiements WHERE vente_id IN ({sold})", {"t": tenant})
        conn.execute(f"DELETE FROM ventes WHERE id IN ({sold})", {"t": tenant})
    mutated = state_of(pos_db.url, "pos", tenant)
    logs_before = len(_rows(pos_db, "backup_restore_logs", tenant))
    name = f"tenant-backup restore {tenant}"
    blocker = _blocking(pos_db, "lignes_vente", "EXCLUSIVE")  # reads pass, the restore's writes wait
    try:
        restore = cli(
            "restore", backup.backup_id, "--db", pos_db.url, "--storage", env["store"], "--confirm", "RESTORE",
            "--json", lock_timeout="60s",
        )  # fmt: skip
        pid = wait_for(
            "the restore to be inside its apply, waiting to write lignes_vente",
            lambda: _session(pos_db, name, "a.wait_event_type = 'Lock' AND a.query LIKE 'INSERT INTO%%lignes_vente%%'"),
        )
        # The sales it put back are written, uncommitted, in its transaction.
        written = "SELECT count(*) FROM pg_locks WHERE pid = %s AND relation = 'ventes'::regclass AND mode = %s"
        assert _one(pos_db, written, pid, "RowExclusiveLock")
        running = _rows(pos_db, "backup_restore_logs", tenant)[-1]
        assert running["result"] == "running" and running["details"]["flow_run_id"]
        restore.kill9()
        wait_for("the dead restore's session to end", lambda: not _session(pos_db, name), timeout=20)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert state_of(pos_db.url, "pos", tenant) == mutated
    assert _rows(pos_db, "backup_restore_logs", tenant)[-1]["result"] == "running"

    done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert done.status == "completed" and state_of(pos_db.url, "pos", tenant) == backed_up
    logs = _rows(pos_db, "backup_restore_logs", tenant)
    assert len(logs) == logs_before + 2  # the dead run's row and the new run's, one each
    reaped = next(log for log in logs if log["id"] == running["id"])
    assert reaped["result"] == "failed" and "died" in reaped["error_message"]
    assert f"reaped by the next restore of tenant {tenant}" in reaped["error_message"]
    assert logs[-1]["result"] == "success" and logs[-1]["details"]["applied"] is True
    state = _flow_run_state(running["details"]["flow_run_id"])
    assert (
        state.type == StateType.CRASHED
        and state.message == f"process died; reaped by the next restore of tenant {tenant}"
    )


def test_waits_for_a_tenants_lock_or_its_tables_are_bounded_and_name_the_holder(pos_db: DemoDatabase) -> None:
    tenant = pos_db.tenants[2].id
    said: list[str] = []
    with psycopg.connect(pos_db.url, autocommit=True, application_name="ops-console") as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", (TENANT_LOCK, tenant))
        with (
            pytest.raises(TenantBusyError, match=rf"tenant {tenant} is running \(its lock is held by 'ops-console'"),
            tenant_lock(pos_db.url, tenant, lock_timeout="300ms", notify=said.append),
        ):
            pass
    assert len(said) == 1 and said[0].startswith(f"backup of tenant {tenant} waits for the tenant's lock, held by")
    assert "'ops-console' (pid" in said[0] and "lock_timeout=300ms" in said[0]

    said.clear()
    blocker = _blocking(pos_db, "zones", "ACCESS EXCLUSIVE", name="migration")
    try:
        with tenant_lock(pos_db.url, tenant, lock_timeout="300ms", notify=said.append) as lock:
            with (
                pytest.raises(TenantBusyError, match=r"locked by another session \('migration' \(pid \d+"),
                lock.snapshot([("public", "tables"), ("public", "zones")]),
            ):
                pass
            assert lock.conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable
    finally:
        blocker.close()
    assert len(said) == 1 and "waits for its tables, locked by 'migration' (pid" in said[0]
