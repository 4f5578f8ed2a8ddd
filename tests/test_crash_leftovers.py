"""What a run killed with ``kill -9`` leaves in its spool folder and in storage, and who removes
it: real processes, real PostgreSQL, file:// and moto's S3 server, a real Prefect API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from tenant_backup.backup.assemble import artifact_key, tenant_prefix
from tenant_backup.db import DatabaseOwner, read_owner
from tenant_backup.locks import tenant_lock
from tenant_backup.operations.reconcile import reconcile
from tenant_backup.settings import Settings
from tenant_backup.spool import spool_dir, sweep
from tenant_backup.storage import Storage, is_partial
from tests.conftest import Database, drop_database, make_database
from tests.helpers import stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ["t1", "t2", "t3"]


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """A ``tests.killable`` process, once it says it is half-way; returns it and what it said."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.killable", *args], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line, f"tests.killable {args[0]} exited with {proc.wait()} before it was ready"
    return proc, line


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_a_killed_runs_spool_folder_is_removed_by_the_next_run_and_a_live_runs_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    live, live_folder = _start("spool", "backup", str(root))
    dead, dead_folder = _start("spool", "restore", str(root))
    legacy = root / "tenant-verify-abcd1234"  # made before folders had a lock: left alone
    legacy.mkdir()
    try:
        _kill(dead)
        assert Path(dead_folder, ".lock").is_file()  # kill -9: nothing of the run's own clean-up ran
        with spool_dir("verify", root) as mine:
            assert not Path(dead_folder).exists() and Path(live_folder).is_dir() and Path(mine).is_dir()
            assert sweep(root) == []  # neither the live run's folder nor this one
        assert not Path(mine).exists()
        _kill(live)
        assert sweep(root) == [live_folder] and legacy.is_dir()
    finally:
        stop(live, dead)


@pytest.fixture(scope="module")
def small_db(pg_server: str) -> Iterator[Database]:
    db = make_database(pg_server)
    try:
        with db.connect() as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, tenant text NOT NULL, label text)")
            for i, tenant in enumerate(TENANTS):
                conn.execute("INSERT INTO items VALUES (%s, %s, 'an item')", (i, tenant))
        yield db
    finally:
        drop_database(db)


def _owner(db: Database) -> DatabaseOwner:
    with psycopg.connect(db.url) as conn:
        return read_owner(conn)


def _backup(tenant: str) -> Any:
    from flows.backup import backup_tenant

    return backup_tenant(tenant_id=tenant, profile=None, tenant_column="tenant", force=True)


@pytest.mark.usefixtures("prefect_api")
def test_the_flows_and_reconcile_remove_the_spool_folders_of_killed_runs(
    small_db: Database, env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.restore import verify_backup

    env["use"](small_db)
    root = tmp_path / "spool"
    monkeypatch.setenv("TENANT_BACKUP_SPOOL_DIR", str(root))
    for run in ("backup", "verify", "reconcile"):
        proc, folder = _start("spool", "backup", str(root))
        _kill(proc)
        if run == "backup":
            result = _backup("t1")
        elif run == "verify":
            verify_backup(backup_id=UUID(result.backup_id))
        else:
            report = reconcile(small_db.url, Settings(), Storage(env["store"]))
            assert report.spools_removed == [folder]
        assert not Path(folder).exists(), run
    assert list(root.iterdir()) == []  # and the runs' own folders are gone too


def _storage(where: str, env: dict[str, Any], request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    url, options = (env["store"], {}) if where == "file" else request.getfixturevalue("s3_bucket")
    return url, options


def _killed_writer(
    url: str, options: dict[str, Any], owner: DatabaseOwner, tenant: str, *, size: int = 1000, flush: bool = True
) -> str:
    """The ``.partial`` key of a writer of ``tenant`` killed mid-``write_atomic``."""
    key = artifact_key(owner, tenant, str(uuid.uuid4()), datetime.now(UTC))
    proc, _ = _start("write", url, json.dumps(options), key, str(size), *(["flush"] if flush else []))
    _kill(proc)
    return key


def _advisory_locks(db: Database) -> int:
    """Advisory locks held in ``db`` (a closed session's go a moment after the close returns)."""
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return int(row[0]) if row else 0


def _partials(storage: Storage, folder: str) -> list[str]:
    return [k for k in storage.list(folder) if is_partial(k)]


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("where", ["file", "s3"])
def test_a_partial_object_of_a_killed_writer_is_removed_by_the_tenants_next_backup(
    where: str, small_db: Database, env: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    url, options = _storage(where, env, request)
    env["use"](small_db, url, options)
    storage, owner = Storage(url, options), _owner(small_db)
    folder = tenant_prefix(owner, "t1")
    _killed_writer(url, options, owner, "t1")
    _killed_writer(url, options, owner, "t2")
    assert len(_partials(storage, folder)) == 1
    if where == "s3":  # a bigger artifact: an incomplete multipart upload, not an object
        _killed_writer(url, {**options, "default_block_size": 5 << 20}, owner, "t1", size=6 << 20, flush=False)
        assert len(storage.uploads(folder)) == 1
    result = _backup("t1")
    assert storage.list(folder) == [storage.key_of(result.storage_path)] and storage.uploads(folder) == []
    assert len(_partials(storage, tenant_prefix(owner, "t2"))) == 1  # another tenant's waits for its own backup


@pytest.mark.parametrize("where", ["file", "s3"])
def test_reconcile_removes_killed_writers_partials_but_not_those_of_a_tenant_whose_lock_is_held(
    where: str, small_db: Database, env: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    url, options = _storage(where, env, request)
    storage, owner, settings = Storage(url, options), _owner(small_db), Settings()
    _killed_writer(url, options, owner, "t2")
    _killed_writer(url, options, owner, "t3")
    dead, held = _partials(storage, tenant_prefix(owner, "t2")), _partials(storage, tenant_prefix(owner, "t3"))
    uploads: list[str] = []
    if where == "s3":
        big = {**options, "default_block_size": 5 << 20}
        for tenant in ("t2", "t3"):
            _killed_writer(url, big, owner, tenant, size=6 << 20, flush=False)
        uploads = [u.key for u in storage.uploads(owner.segment)]
        assert len(uploads) == 2
    with tenant_lock(small_db.url, "t3"):  # as a running backup of t3 holds it
        report = reconcile(small_db.url, settings, storage)
        assert report.orphans == dead and report.busy == sorted(held + [k for k in uploads if "/t3/" in k])
        assert report.uploads == [k for k in uploads if "/t2/" in k] and _partials(storage, owner.segment)
        report = reconcile(small_db.url, settings, storage, clean=True)
        assert report.orphans == dead and not any(storage.exists(k) for k in dead) and storage.exists(held[0])
        assert [u.key for u in storage.uploads(owner.segment)] == [k for k in uploads if "/t3/" in k]
    wait_for("the closed session's lock to go", lambda: not _advisory_locks(small_db))  # the run of t3 is over
    report = reconcile(small_db.url, settings, storage, clean=True)
    assert report.orphans == held and report.busy == [] and _partials(storage, owner.segment) == []
    assert storage.uploads(owner.segment) == []
