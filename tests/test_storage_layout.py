"""Where artifacts go: ``<root>/<db segment>/<tenant segment>/<file>``, for any tenant id and any
table name, on file:// and on moto's S3 server; real PostgreSQL and a real Prefect API."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup import ledger
from tenant_backup.artifact.dataframes import open_backup
from tenant_backup.artifact.manifest import ARTIFACT_VERSION
from tenant_backup.db import DatabaseOwner, read_owner
from tenant_backup.errors import ConfigurationError
from tenant_backup.ledger import BackupFilter
from tenant_backup.operations import maintenance
from tenant_backup.operations.retention import RetentionPolicy
from tenant_backup.segments import decode_segment, encode_segment
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy.profiles import discovered_profile
from tests.conftest import Database, drop_database, make_database
from tests.helpers import state_of

pytestmark = pytest.mark.usefixtures("prefect_api")

# Every one of them once wrote outside its folder, into another's, or into nested folders.
TENANTS = ["..", ".", "x/../a", "a", "a/b", "a%2Fb", "%", ".hidden", "étab é", "back\\slash"]
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, tenant text NOT NULL, label text);
CREATE TABLE "../x" (id int PRIMARY KEY, tenant text NOT NULL, v text);
CREATE TABLE "a/b" (id int PRIMARY KEY, item_id int NOT NULL REFERENCES items (id), note text);
"""
PROFILE = discovered_profile("tenant")


@pytest.fixture(scope="module")
def hostile_db(pg_server: str) -> Iterator[Database]:
    """Tables named like paths, and rows of every tenant of TENANTS."""
    db = make_database(pg_server)
    try:
        with db.connect() as conn:
            conn.execute(SCHEMA)
            for i, tenant in enumerate(TENANTS):
                for j in range(3):
                    row = i * 10 + j
                    conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (row, tenant, f"item {j} of {tenant}"))
                    conn.execute('INSERT INTO "../x" VALUES (%s, %s, %s)', (row, tenant, f"x {j}"))
                    conn.execute('INSERT INTO "a/b" VALUES (%s, %s, %s)', (row, row, f"note {j}"))
        yield db
    finally:
        drop_database(db)


def _owner(db: Database) -> DatabaseOwner:
    with psycopg.connect(db.url) as conn:
        return read_owner(conn)


def _wipe(db: Database, tenant: str) -> None:
    with db.connect() as conn, conn.transaction():
        conn.execute('DELETE FROM "a/b" WHERE item_id IN (SELECT id FROM items WHERE tenant = %s)', (tenant,))
        conn.execute("DELETE FROM items WHERE tenant = %s", (tenant,))
        conn.execute('DELETE FROM "../x" WHERE tenant = %s', (tenant,))


def _backup(tenant: str, **kwargs: Any) -> Any:
    return backup_tenant(tenant_id=tenant, profile=None, tenant_column="tenant", force=True, **kwargs)


def _check_layout(storage: Storage, owner: DatabaseOwner, backups: dict[str, Any]) -> None:
    """One artifact per tenant, each in ``<db segment>/<its tenant's segment>/``, no two shared."""
    keys = storage.list()
    assert sorted(keys) == sorted(storage.key_of(b.storage_path) for b in backups.values())
    for tenant, backup in backups.items():
        assert storage.key_of(backup.storage_path).split("/")[:2] == [owner.segment, encode_segment(tenant)]
    assert all(k.count("/") == 2 and k.startswith(owner.segment + "/") for k in keys)
    assert sorted(decode_segment(k.split("/")[1]) for k in keys) == sorted(backups)


def _prune_and_delete(db: Database, storage: Storage, tenant: str, older: str, newer: Any) -> None:
    """Two backups of ``tenant``: list shows both, prune keeps the newer, delete removes it."""
    settings = Settings()
    folder = f"{_owner(db).segment}/{encode_segment(tenant)}"
    others = [k for k in storage.list() if not k.startswith(folder + "/")]
    with psycopg.connect(db.url) as conn:
        listed = ledger.list_backups(conn, settings.ledger_schema, where=BackupFilter(tenant_id=tenant))
    assert [r.id for r in listed] == [newer.backup_id, older]
    report = maintenance.prune(
        db.url, settings, storage, RetentionPolicy(max_backups=1, max_age_days=None), tenant_id=tenant
    )
    assert report.deleted == [older] and not report.errors and not report.not_ours
    assert storage.list(folder) == [storage.key_of(newer.storage_path)]
    maintenance.delete_backup(db.url, settings, storage, newer.backup_id, confirm="DELETE")
    assert storage.list(folder) == [] and [k for k in storage.list() if k != folder] == others


def test_every_tenant_id_backs_up_into_one_folder_and_restores_lists_prunes_and_deletes_there(
    hostile_db: Database, env: dict[str, Any], tmp_path: Path
) -> None:
    env["use"](hostile_db)
    storage = Storage(env["store"])
    owner = _owner(hostile_db)
    first = {}
    for i, tenant in enumerate(TENANTS):
        before = state_of(hostile_db.url, PROFILE, tenant)
        first[tenant] = _backup(tenant, format=("csv", "json", "sql")[i % 3])  # tables named like paths too
        row = _row(hostile_db, first[tenant].backup_id)
        assert row.owner == owner and row.tenant_id == tenant
        _wipe(hostile_db, tenant)
        restored = restore_backup(backup_id=UUID(first[tenant].backup_id), confirm="RESTORE")
        assert restored.status == "completed" and state_of(hostile_db.url, PROFILE, tenant) == before, tenant
    _check_layout(storage, owner, first)
    root = Path(env["store"].removeprefix("file://"))
    assert {p.relative_to(root).as_posix() for p in tmp_path.rglob("*") if p.is_file()} == set(storage.list())
    for tenant in TENANTS:
        _prune_and_delete(hostile_db, storage, tenant, first[tenant].backup_id, _backup(tenant))
    assert storage.list() == []


def test_every_tenant_id_backs_up_into_one_folder_on_s3_and_reads_back_from_there(
    hostile_db: Database, env: dict[str, Any], s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    url, options = s3_bucket
    env["use"](hostile_db, url, options)
    storage = Storage(url, options)
    first = {tenant: _backup(tenant) for tenant in TENANTS}
    _check_layout(storage, _owner(hostile_db), first)
    for tenant, result in first.items():  # the read path of restore, verify and show
        backup = open_backup(result.storage_path, storage_options=options, checksum=result.checksum)
        assert backup.manifest.tenant_id == tenant and len(backup.table("items")) == 3
    tenant = "x/../a"
    before = state_of(hostile_db.url, PROFILE, tenant)
    _wipe(hostile_db, tenant)
    restored = restore_backup(backup_id=UUID(first[tenant].backup_id), confirm="RESTORE")
    assert restored.status == "completed" and state_of(hostile_db.url, PROFILE, tenant) == before
    _prune_and_delete(hostile_db, storage, tenant, first[tenant].backup_id, _backup(tenant))
    for other in set(TENANTS) - {tenant}:
        maintenance.delete_backup(hostile_db.url, Settings(), storage, first[other].backup_id, confirm="DELETE")
    assert storage.list() == []


def _row(db: Database, backup_id: str) -> ledger.BackupRow:
    with psycopg.connect(db.url) as conn:
        return ledger.get_backup(conn, "tenant_backup", backup_id)


def test_tables_named_like_paths_stay_inside_the_artifact(hostile_db: Database, env: dict[str, Any]) -> None:
    env["use"](hostile_db)
    storage = Storage(env["store"])
    result = _backup("..")
    with storage.open_read(storage.key_of(result.storage_path)) as fh:
        archive = zipfile.ZipFile(io.BytesIO(fh.read()))
    assert sorted(archive.namelist()) == ["%2E.%2Fx.csv", "a%2Fb.csv", "items.csv", "manifest.json"]
    backup = open_backup(result.storage_path, checksum=result.checksum)  # what `show` does
    assert backup.manifest.tables["../x"].file == "%2E.%2Fx.csv" and len(backup.table("a/b")) == 3
    assert backup.manifest.version == ARTIFACT_VERSION and backup.manifest.database == _owner(hostile_db)


@pytest.mark.parametrize(("tenant", "message"), [("", "tenant id is empty"), ("é" * 40, "over the limit of 200")])
def test_a_tenant_id_that_cannot_be_stored_is_refused_before_anything_is_written(
    hostile_db: Database, env: dict[str, Any], tenant: str, message: str
) -> None:
    env["use"](hostile_db)
    with psycopg.connect(hostile_db.url) as conn:
        ledger.migrate(conn, "tenant_backup")
        before = conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone()
    with pytest.raises(ConfigurationError, match=message):
        _backup(tenant)
    with psycopg.connect(hostile_db.url) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone() == before
    assert not Path(env["store"].removeprefix("file://")).exists()
