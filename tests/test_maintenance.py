"""Retention, reconciliation, download URLs and deletion, on a real ledger and real storage."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tenant_backup.backup.assemble import artifact_key, tenant_prefix
from tenant_backup.db import DatabaseOwner, read_owner
from tenant_backup.errors import ConfigurationError, PermissionDeniedError
from tenant_backup.ledger import BackupRow, migrate
from tenant_backup.locks import tenant_lock
from tenant_backup.operations import maintenance
from tenant_backup.operations.reconcile import reconcile
from tenant_backup.operations.retention import RetentionPolicy, decide
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tests.conftest import Database, DemoDatabase, drop_database, make_database

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def history(
    tenant: str, days: list[float], *, status: str = "completed", schedule_id: str | None = None
) -> list[BackupRow]:
    return [
        BackupRow(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            tenant_column="etablissement_id",
            nom="b",
            type="full",
            format="csv",
            status=status,  # type: ignore[arg-type]
            backup_type="scheduled",
            created_at=NOW - timedelta(days=d),
            schedule_id=schedule_id,
        )
        for d in days
    ]


def kept(decisions: list[Any]) -> set[str]:
    return {d.backup_id for d in decisions if d.keep}


def test_limits_keep_at_most_n_backups_and_none_older_than_the_age_limit() -> None:
    rows = history("t1", [0.1, 1, 2, 3, 4, 5, 6, 8, 9])
    decisions = decide(rows, RetentionPolicy(max_backups=5, max_age_days=7), {}, NOW)
    assert kept(decisions) == {r.id for r in rows[:5]}
    reasons = {d.backup_id: d.reason for d in decisions}
    assert reasons[rows[5].id] == "beyond the newest 5" and reasons[rows[8].id] == "older than 7 days"


def test_keep_rules_keep_the_newest_backup_of_each_period_whatever_its_age() -> None:
    rows = history("t1", [0.1, 0.2, 1.1, 1.2, 9, 10, 16, 40, 41, 75])
    policy = RetentionPolicy(max_backups=None, max_age_days=1, keep_daily=2, keep_weekly=3, keep_monthly=3)
    decisions = {d.backup_id: d for d in decide(rows, policy, {}, NOW)}
    days = {r.id: (NOW - r.created_at).days for r in rows}
    kept_days = sorted(days[i] for i, d in decisions.items() if d.keep)
    # NOW is Sunday 22 November. Within 1 day: 0.1 and 0.2. daily: 22 and 21 Nov (0.1, 1.1);
    # weekly: ISO weeks 47, 46, 45 (0.1, 9, 16); monthly: Nov, Oct, Sep (0.1, 40, 75).
    assert kept_days == [0, 0, 1, 9, 16, 40, 75]
    assert decisions[rows[1].id].reason == "within the limits"
    assert decisions[rows[5].id].reason == "older than 1 days"
    assert not decisions[rows[3].id].keep and not decisions[rows[8].id].keep


def test_the_newest_completed_backup_is_never_deleted() -> None:
    old = history("t1", [30, 31])
    failed = history("t1", [0.5, 1], status="failed")
    other = history("t2", [100])
    decisions = {d.backup_id: d for d in decide(old + failed + other, RetentionPolicy(max_age_days=7), {}, NOW)}
    assert decisions[old[0].id].keep and decisions[old[0].id].reason == "newest full backup of the tenant"
    assert not decisions[old[1].id].keep
    assert decisions[other[0].id].keep
    assert all(decisions[r.id].keep for r in failed)  # within the age limit


def test_the_guard_keeps_the_newest_full_backup_not_a_newer_partial_one() -> None:
    full = history("t1", [20, 21])
    partial = [r.model_copy(update={"type": "partial"}) for r in history("t1", [0.5, 10])]
    only_partial = [r.model_copy(update={"type": "partial"}) for r in history("t2", [30, 40])]
    decisions = {
        d.backup_id: d for d in decide(full + partial + only_partial, RetentionPolicy(max_age_days=7), {}, NOW)
    }
    assert decisions[full[0].id].keep and decisions[full[0].id].reason == "newest full backup of the tenant"
    assert not decisions[full[1].id].keep and not decisions[partial[1].id].keep
    assert decisions[partial[0].id].keep  # within the age limit
    assert decisions[only_partial[0].id].keep and "it has no full one" in decisions[only_partial[0].id].reason


def test_a_schedules_retention_days_replace_the_default_age_limit() -> None:
    manual = history("t1", [0.1, 10])
    scheduled = history("t1", [12, 20], schedule_id="s1")
    decisions = {d.backup_id: d for d in decide(manual + scheduled, RetentionPolicy(max_age_days=7), {"s1": 14}, NOW)}
    assert [decisions[r.id].keep for r in manual + scheduled] == [True, False, True, False]


# --- against the ledger and storage -------------------------------------------------------------


def _ledger(db: Database, store: str) -> tuple[Settings, Storage]:
    settings = Settings(database_url=db.url, storage_url=store)
    with psycopg.connect(db.url, autocommit=True) as conn:
        migrate(conn, settings.ledger_schema)
    return settings, Storage(store)


def owner(db: Database) -> DatabaseOwner:
    with psycopg.connect(db.url) as conn:
        return read_owner(conn)


def _stored_backup(
    db: Database, storage: Storage, tenant: str, age_days: float, *, by: Database | None = None, **extra: Any
) -> tuple[str, str]:
    """A completed backup row in ``db``'s ledger and its object, as a backup of ``by`` (default:
    ``db``) leaves them; ``by`` another database is a row of a ledger cloned from it."""
    backup_id = str(uuid.uuid4())
    created = datetime.now(UTC) - timedelta(days=age_days)
    writer = owner(by or db)
    key = artifact_key(writer, tenant, backup_id, created)
    with storage.write_atomic(key) as out:
        out.write(b"artifact " + backup_id.encode())
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_backup.backups (id, tenant_id, tenant_column, nom, type, format, status, "
            "storage_path, created_at, completed_at, schedule_id, metadata) "
            "VALUES (%s, %s, 'etablissement_id', 'b', 'full', 'csv', %s, %s, %s, %s, %s, %s)",
            (
                backup_id,
                tenant,
                extra.get("status", "completed"),
                storage.full_url(key),
                created,
                created,
                extra.get("schedule_id"),
                Jsonb({"database": writer.model_dump()}),
            ),
        )
    return backup_id, key


def _ids(db: Database) -> set[str]:
    with psycopg.connect(db.url) as conn:
        return {r[0] for r in conn.execute("SELECT id::text FROM tenant_backup.backups")}


def test_prune_deletes_the_object_then_the_row_and_keeps_what_the_rules_say(database: Database, tmp_path: Any) -> None:
    settings, storage = _ledger(database, f"file://{tmp_path}/store")
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("TRUNCATE tenant_backup.backups CASCADE")
        schedule = conn.execute(
            "INSERT INTO tenant_backup.backup_schedules (tenant_id, nom, frequence, retention_jours) "
            "VALUES ('t1', 'weekly', 'daily', 20) RETURNING id::text"
        ).fetchone()[0]  # type: ignore[index]
    t1 = [_stored_backup(database, storage, "t1", d) for d in (0.1, 2, 5, 9, 30)]
    t1_sched = [_stored_backup(database, storage, "t1", d, schedule_id=schedule) for d in (15, 25)]
    t2 = [_stored_backup(database, storage, "t2", d) for d in (40, 50)]
    outside = str(uuid.uuid4())
    with psycopg.connect(database.url, autocommit=True) as conn:  # a row whose object lies in another storage
        conn.execute(
            "INSERT INTO tenant_backup.backups (id, tenant_id, tenant_column, nom, type, format, status, "
            "storage_path, created_at) VALUES (%s, 't2', 'etablissement_id', 'b', 'full', 'csv', 'completed', "
            "'s3://elsewhere/t2/x.zip', now() - interval '60 days')",
            (outside,),
        )
    policy = RetentionPolicy(max_backups=50, max_age_days=7)

    dry = maintenance.prune(database.url, settings, storage, policy, dry_run=True)
    expected_gone = {t1[3][0], t1[4][0], t1_sched[1][0], t2[1][0]}
    assert {d.backup_id for d in dry.to_delete} == expected_gone  # the other storage's backup: not decided here
    assert outside not in {d.backup_id for d in dry.decisions}
    assert len(_ids(database)) == 10 and all(storage.exists(k) for _, k in t1 + t1_sched + t2)

    report = maintenance.prune(database.url, settings, storage, policy)
    assert set(report.deleted) == expected_gone and not report.errors
    assert _ids(database) == {t1[0][0], t1[1][0], t1[2][0], t1_sched[0][0], t2[0][0], outside}
    for backup_id, key in t1 + t1_sched + t2:
        assert storage.exists(key) == (backup_id in _ids(database))
    with psycopg.connect(database.url) as conn:
        logged = conn.execute("SELECT details FROM tenant_backup.backup_restore_logs WHERE action = 'prune'").fetchone()
    assert logged is not None and set(logged[0]["deleted"]) == set(report.deleted)


def test_reconcile_finds_an_orphan_object_and_a_missing_object(database: Database, tmp_path: Any) -> None:
    settings, storage = _ledger(database, f"file://{tmp_path}/store")
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("TRUNCATE tenant_backup.backups CASCADE")
    kept_id, _ = _stored_backup(database, storage, "t1", 1)
    lost_id, lost_key = _stored_backup(database, storage, "t1", 2)
    storage.remove(lost_key)
    orphan = artifact_key(owner(database), "t1", str(uuid.uuid4()), datetime(2026, 1, 1))
    with storage.write_atomic(orphan) as out:
        out.write(b"left behind")
    running = str(uuid.uuid4())  # a backup being written (its run holds the tenant lock): not an orphan
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_backup.backups (id, tenant_id, tenant_column, nom, type, format, status) "
            "VALUES (%s, 't2', 'etablissement_id', 'b', 'full', 'csv', 'in_progress')",
            (running,),
        )
    partial = f"{tenant_prefix(owner(database), 't2')}/.20260102T000000Z-{running}.zip.abcd1234.partial"
    storage.fs.makedirs(storage.path(tenant_prefix(owner(database), "t2")), exist_ok=True)
    storage.fs.pipe(storage.path(partial), b"half")

    with tenant_lock(database.url, "t2"):
        found = reconcile(database.url, settings, storage)
        assert found.orphans == [orphan] and found.missing == [lost_id] and found.busy == [partial]
        assert storage.exists(orphan)

        reconcile(database.url, settings, storage, clean=True)
        assert not storage.exists(orphan) and storage.exists(partial)
    with psycopg.connect(database.url) as conn:
        statuses = dict(conn.execute("SELECT id::text, status FROM tenant_backup.backups").fetchall())
    assert statuses[lost_id] == "failed" and statuses[kept_id] == "completed" and statuses[running] == "in_progress"
    again = reconcile(database.url, settings, storage)
    assert again.orphans == [partial] and again.missing == [] and again.busy == []  # its run is gone now


@pytest.mark.usefixtures("prefect_api")
def test_a_presigned_url_from_the_s3_server_downloads_the_artifact(
    pos_db: DemoDatabase, s3_bucket: tuple[str, dict[str, Any]], env: Any
) -> None:
    from flows.backup import backup_tenant

    url, options = s3_bucket
    env["use"](pos_db, url, options)
    result = backup_tenant(tenant_id=pos_db.tenants[0].id, force=True)
    settings = Settings()
    signed = maintenance.download_url(pos_db.url, settings, Storage(url, options), result.backup_id)
    query = parse_qs(urlsplit(signed).query)
    assert signed.startswith("http://127.0.0.1") and "Signature" in query
    assert abs(int(query["Expires"][0]) - (time.time() + 3600)) < 120  # valid one hour
    body = httpx.get(signed, timeout=10).content  # no credentials: the URL is the permission
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == result.checksum


@pytest.mark.usefixtures("prefect_api")
def test_delete_is_for_admins_confirmed_and_removes_object_then_row(pos_db: DemoDatabase, env: Any) -> None:
    from flows.backup import backup_tenant

    env["use"](pos_db)
    tenant = pos_db.tenants[1]
    result = backup_tenant(tenant_id=tenant.id, force=True)
    settings = Settings()
    storage = Storage(env["store"])
    key = storage.key_of(result.storage_path)
    cashier = tenant.member_id  # a user of the tenant without an admin role
    with pytest.raises(PermissionDeniedError, match="only SUPER_ADMIN / ADMIN"):
        maintenance.delete_backup(
            pos_db.url, settings, storage, result.backup_id, confirm="DELETE", requested_by=cashier
        )
    with pytest.raises(ConfigurationError, match="--confirm DELETE"):
        maintenance.delete_backup(
            pos_db.url, settings, storage, result.backup_id, confirm="yes", requested_by=tenant.admin_id
        )
    assert storage.exists(key) and result.backup_id in _ids(pos_db)
    out = maintenance.delete_backup(
        pos_db.url, settings, storage, result.backup_id, confirm="DELETE", requested_by=tenant.admin_id
    )
    assert out["deleted"] and not storage.exists(key) and result.backup_id not in _ids(pos_db)
    with psycopg.connect(pos_db.url) as conn:
        results = [
            r[0]
            for r in conn.execute(
                "SELECT result FROM tenant_backup.backup_restore_logs WHERE action = 'delete' ORDER BY created_at"
            )
        ]
    assert results == ["failed", "failed", "success"]


def test_a_scheduled_backup_stamps_its_schedule_applies_retention_and_reports_progress(
    prefect_api: str, pos_db: DemoDatabase, env: Any
) -> None:
    from flows.backup import backup_tenant
    from tasks.report import artifact_key

    env["use"](pos_db)
    tenant = pos_db.tenants[2].id
    _, storage = _ledger(pos_db, env["store"])
    with psycopg.connect(pos_db.url, autocommit=True) as conn:
        schedule = conn.execute(
            "INSERT INTO tenant_backup.backup_schedules (tenant_id, nom, frequence, heure_execution, retention_jours) "
            "VALUES (%s, 'nightly', 'daily', '02:30', 3) RETURNING id::text",
            (tenant,),
        ).fetchone()[0]  # type: ignore[index]
    old_id, old_key = _stored_backup(pos_db, storage, tenant, 5, schedule_id=schedule)
    recent_id, _ = _stored_backup(pos_db, storage, tenant, 2, schedule_id=schedule)

    result = backup_tenant(tenant_id=tenant, backup_type="scheduled", schedule_id=schedule, force=True)

    assert old_id not in _ids(pos_db) and not storage.exists(old_key)  # older than the schedule's 3 days
    assert {recent_id, result.backup_id} <= _ids(pos_db)
    with psycopg.connect(pos_db.url) as conn:
        made_by = conn.execute("SELECT schedule_id::text FROM tenant_backup.backups WHERE id = %s", (result.backup_id,))
        assert made_by.fetchone() == (schedule,)
        last, following = conn.execute(  # type: ignore[misc]
            "SELECT derniere_execution, prochaine_execution FROM tenant_backup.backup_schedules WHERE id = %s",
            (schedule,),
        ).fetchone()
    assert last is not None and following > last
    progress = httpx.post(
        f"{prefect_api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [artifact_key("progress", tenant)]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=10,
    ).json()
    assert progress and progress[0]["type"] == "progress" and progress[0]["data"] == 100.0


def test_prune_of_tenant_x_never_touches_the_objects_of_tenant_x_slash_y(database: Database, tmp_path: Any) -> None:
    settings, storage = _ledger(database, f"file://{tmp_path}/store")
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("TRUNCATE tenant_backup.backups CASCADE")
    x = [_stored_backup(database, storage, "x", d) for d in (1, 2, 3)]
    nested = [_stored_backup(database, storage, "x/y", d) for d in (1, 2, 3)]
    report = maintenance.prune(database.url, settings, storage, RetentionPolicy(max_backups=1), tenant_id="x")
    assert set(report.deleted) == {x[1][0], x[2][0]}
    assert storage.exists(x[0][1]) and not storage.exists(x[1][1]) and not storage.exists(x[2][1])
    assert all(storage.exists(key) for _, key in nested) and {i for i, _ in nested} <= _ids(database)
    assert storage.list(tenant_prefix(owner(database), "x")) == [x[0][1]]


def test_two_databases_sharing_a_storage_root_each_clean_only_their_own_objects(
    database: Database, pg_server: str, tmp_path: Any
) -> None:
    """prod and staging in one bucket: each reconciles and prunes its own folder; the other's
    objects (and those of the layout before databases had folders) are not ours, never touched;
    a row of a ledger cloned from the other database goes, its object stays."""
    store = f"file://{tmp_path}/shared"
    other = make_database(pg_server)
    try:
        settings, storage = _ledger(database, store)
        _ledger(other, store)
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute("TRUNCATE tenant_backup.backups CASCADE")
        ours = [_stored_backup(database, storage, "t1", d) for d in (1, 30)]
        theirs = [_stored_backup(other, storage, "t1", d) for d in (1, 30)]
        stray = {}
        for db in (database, other):
            stray[db.name] = artifact_key(owner(db), "t1", str(uuid.uuid4()), datetime(2026, 1, 1))
            with storage.write_atomic(stray[db.name]) as out:
                out.write(b"left by a killed run")
        legacy = f"t1/20250101T000000Z-{uuid.uuid4()}.zip"  # the layout before databases had folders
        with storage.write_atomic(legacy) as out:
            out.write(b"old")

        found = reconcile(database.url, settings, storage, clean=True)
        assert found.orphans == [stray[database.name]] and found.missing == []
        assert found.not_ours == sorted([*(key for _, key in theirs), stray[other.name], legacy])
        assert not storage.exists(stray[database.name])
        assert all(storage.exists(key) for _, key in ours + theirs) and storage.exists(stray[other.name])
        mirrored = reconcile(other.url, Settings(database_url=other.url), storage)
        assert mirrored.orphans == [stray[other.name]]
        assert mirrored.not_ours == sorted([*(key for _, key in ours), legacy])

        # A row of a ledger cloned from the other database: it names their object.
        cloned_id, cloned_key = theirs[1]
        with psycopg.connect(other.url) as src, psycopg.connect(database.url, autocommit=True) as dst:
            row = src.execute(
                "SELECT id, tenant_id, storage_path, created_at, metadata FROM tenant_backup.backups WHERE id = %s",
                (cloned_id,),
            ).fetchone()
            assert row is not None
            dst.execute(
                "INSERT INTO tenant_backup.backups (id, tenant_id, tenant_column, nom, type, format, status, "
                "storage_path, created_at, completed_at, metadata) VALUES "
                "(%s, %s, 'etablissement_id', 'b', 'full', 'csv', 'completed', %s, %s, %s, %s)",
                (row[0], row[1], row[2], row[3], row[3], Jsonb(row[4])),
            )
        assert cloned_key not in reconcile(database.url, settings, storage).not_ours  # in our ledger now
        report = maintenance.prune(database.url, settings, storage, RetentionPolicy(max_age_days=7))
        assert set(report.deleted) == {ours[1][0], cloned_id} and report.not_ours == [cloned_id]
        assert not storage.exists(ours[1][1]) and storage.exists(cloned_key)
        assert cloned_id not in _ids(database) and cloned_id in _ids(other)

        with psycopg.connect(database.url, autocommit=True) as dst:  # cloned again, then deleted by hand
            dst.execute(
                "INSERT INTO tenant_backup.backups (id, tenant_id, tenant_column, nom, type, format, status, "
                "storage_path, metadata) VALUES (%s, %s, 'etablissement_id', 'b', 'full', 'csv', 'completed', %s, %s)",
                (row[0], row[1], row[2], Jsonb(row[4])),
            )
        out = maintenance.delete_backup(database.url, settings, storage, cloned_id, confirm="DELETE")
        assert out["not_ours"] and storage.exists(cloned_key) and cloned_id not in _ids(database)
    finally:
        drop_database(other)
