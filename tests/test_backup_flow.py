"""The backup flow end to end: real PostgreSQL, real storage (file:// and moto's S3 server),
a real Prefect API."""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.backup import backup_all_tenants, backup_tenant
from flows.restore import restore_backup
from tenant_backup import progress
from tenant_backup.db import connect
from tenant_backup.errors import (
    ConfigurationError,
    PermissionDeniedError,
    SnapshotError,
    StorageError,
    ThrottledError,
    UnknownCategoryError,
)
from tenant_backup.naming import slug
from tenant_backup.storage import Storage
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.catalog import read_catalog
from tenant_backup.tenancy.profiles import load_profile
from tests.conftest import DemoDatabase, free_port, s3_options
from tests.helpers import (
    manifest_of,
    read_artifact,
    rows_of,
    scopes,
    tenant_csv,
    tenant_folder,
    terminate_lock_holders,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_api")


def _ledger(db: DemoDatabase, backup_id: str) -> dict[str, Any]:
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM tenant_backup.backups WHERE id = %s", (backup_id,)).fetchone()
    assert row is not None
    return row


def _backup_rows(db: DemoDatabase, tenant_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        try:
            return cur.execute(
                "SELECT * FROM tenant_backup.backups WHERE tenant_id = %s ORDER BY created_at", (tenant_id,)
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def _logs(db: DemoDatabase, tenant_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM tenant_backup.backup_restore_logs WHERE tenant_id = %s ORDER BY created_at", (tenant_id,)
        ).fetchall()


@pytest.mark.parametrize("schema", ["pos", "crm"])
def test_artifact_holds_exactly_the_tenants_rows(
    schema: str, pos_db: DemoDatabase, crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    db = pos_db if schema == "pos" else crm_db
    env["use"](db)
    tenant = db.tenants[1]
    result = backup_tenant(tenant_id=tenant.id, profile=schema, force=True)
    archive = read_artifact(env["store"], result.storage_path)
    manifest = manifest_of(archive)
    others = {t.id for t in db.tenants} - {tenant.id}
    with connect(db.url) as conn:  # the same pinned session settings as the backup
        table_scopes = scopes(conn, schema)
        for table, scope in table_scopes.items():
            data = archive.read(f"{table}.csv")
            # Byte for byte what the tenant's rows are in the database...
            assert data == tenant_csv(conn, scope, tenant.id), table
            assert hashlib.sha256(data).hexdigest() == manifest["tables"][table]["sha256"]
            # ...and not one row of another tenant, even through foreign keys.
            for other in others:
                other_ids = {r["id"] for r in rows_of_bytes(tenant_csv(conn, scope, other))}
                assert not other_ids & {r["id"] for r in rows_of(archive, table)}, table
    assert set(manifest["tables"]) == set(table_scopes)
    assert manifest["tenant_id"] == tenant.id and manifest["tenant_name"] == tenant.name
    assert manifest["type"] == "full" and result.record_count == sum(result.tables.values()) > 0
    assert all(result.tables[t] > 0 for t in table_scopes), "every table has rows of this tenant"


def rows_of_bytes(data: bytes) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_ledger_row_records_the_artifact_and_its_checksum(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0]
    result = backup_tenant(tenant_id=tenant.id, profile="pos", categories=["clients", "ventes"], force=True)
    row = _ledger(pos_db, result.backup_id)
    storage = Storage(env["store"])
    with storage.open_read(storage.key_of(result.storage_path)) as fh:
        blob = fh.read()
    assert row["status"] == "completed" and row["error_message"] is None
    assert row["checksum"] == f"sha256:{hashlib.sha256(blob).hexdigest()}" == result.checksum
    assert row["file_size"] == len(blob) and row["record_count"] == result.record_count
    assert row["type"] == "partial" and row["categories"] == ["clients", "ventes"]
    assert row["tables_backed_up"] == sorted(["clients", "ventes", "lignes_vente", "paiements", "sessions_caisse"])
    assert row["created_at"] <= row["started_at"] <= row["completed_at"]
    assert row["backup_type"] == "manual"
    assert row["storage_path"].startswith(f"{env['store']}/{tenant_folder(pos_db.url, tenant.id)}/")
    assert [(log["action"], log["result"]) for log in _logs(pos_db, tenant.id)][-1] == ("backup", "success")


def test_flow_run_and_artifacts_are_named_for_the_tenant_in_the_prefect_ui(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    env["use"](pos_db)
    tenant = pos_db.tenants[1]
    result = backup_tenant(tenant_id=tenant.id, profile="pos", categories=["clients"], force=True)
    run_id = _ledger(pos_db, result.backup_id)["metadata"]["flow_run_id"]
    label = f"{slug(tenant.name)}-{tenant.id[:8]}"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)]))
        )
    assert run.name == f"backup-{label}"
    assert {f"tenant:{tenant.id[:8]}", f"tenant-name:{slug(tenant.name)}"} <= set(run.tags)
    assert f"backup-{label}" in {a.key for a in artifacts}


def test_rows_committed_during_the_backup_are_absent_and_foreign_keys_close(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2]
    new_vente = str(uuid.uuid4())
    inserted = threading.Event()
    first = threading.Lock()

    def write_while_paused(event: progress.Progress) -> None:
        # The first table part is done: the snapshot is taken and other tables are still to come.
        if event.done and first.acquire(blocking=False):
            with psycopg.connect(pos_db.url, autocommit=True) as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO ventes (id, etablissement_id, session_caisse_id, utilisateur_id, numero_ticket, "
                    "type_vente, statut, sous_total, total_tva, total_ttc) SELECT %s, etablissement_id, "
                    "session_caisse_id, utilisateur_id, 999999, 'SUR_PLACE', 'PAYEE', 1, 0, 1 FROM ventes "
                    "WHERE etablissement_id = %s LIMIT 1",
                    (new_vente, tenant.id),
                )
                conn.execute(
                    "INSERT INTO lignes_vente (vente_id, produit_id, quantite, prix_unitaire, total) "
                    "SELECT %s, id, 1, 1, 1 FROM produits WHERE etablissement_id = %s LIMIT 1",
                    (new_vente, tenant.id),
                )
                conn.execute(
                    "INSERT INTO paiements (etablissement_id, vente_id, mode_paiement, montant) "
                    "VALUES (%s, %s, 'CARTE', 1)",
                    (tenant.id, new_vente),
                )
            inserted.set()

    progress.subscribe(write_while_paused)
    try:
        result = backup_tenant(tenant_id=tenant.id, profile="pos", force=True)
    finally:
        progress.unsubscribe(write_while_paused)
    assert inserted.is_set()
    archive = read_artifact(env["store"], result.storage_path)
    assert new_vente not in {r["id"] for r in rows_of(archive, "ventes")}
    assert new_vente not in {r["vente_id"] for r in rows_of(archive, "lignes_vente")}
    assert new_vente not in {r["vente_id"] for r in rows_of(archive, "paiements")}
    # Every foreign key points at a row in the artifact, or at a table outside the backup.
    with pos_db.connect() as conn:
        catalog = read_catalog(conn, "public")
    present = {t: {tuple(r.values()) for r in rows_of(archive, t)} for t in result.tables}
    checked = 0
    for fk in catalog.foreign_keys:
        if fk.table not in result.tables or fk.ref_table not in result.tables:
            continue
        parents = {tuple(r[c] for c in fk.ref_columns) for r in rows_of(archive, fk.ref_table)}
        for r in rows_of(archive, fk.table):
            key = tuple(r[c] for c in fk.columns)
            if all(k == "" for k in key):  # NULL
                continue
            assert key in parents, f"{fk.name}: {key} missing from {fk.ref_table}"
            checked += 1
    assert checked > 1000 and present


def test_failed_run_is_recorded_and_leaves_no_artifact(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    """The coordinating session dies mid-backup: the snapshot is gone, the run fails cleanly."""
    env["use"](pos_db)
    tenant = pos_db.tenants[1]
    killed = threading.Event()
    first = threading.Lock()

    def kill_coordinator(event: progress.Progress) -> None:
        if event.done and first.acquire(blocking=False):
            killed.set()
            terminate_lock_holders(pos_db.url)

    progress.subscribe(kill_coordinator)
    try:
        with pytest.raises(Exception) as info:
            backup_tenant(tenant_id=tenant.id, profile="pos", force=True)
    finally:
        progress.unsubscribe(kill_coordinator)
    assert killed.is_set()
    row = _backup_rows(pos_db, tenant.id)[-1]
    assert row["status"] == "failed" and row["completed_at"] is not None
    assert isinstance(info.value, SnapshotError) and "snapshot" in row["error_message"]
    folder = tenant_folder(pos_db.url, tenant.id)
    assert not [k for k in Storage(env["store"]).list(folder) if row["id"] and str(row["id"]) in k]


def test_stale_in_progress_row_is_reaped_by_the_next_run(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0]
    backup_tenant(tenant_id=tenant.id, profile="pos", categories=["imprimantes"], force=True)  # ledger exists
    with pos_db.connect() as conn:
        stale = conn.execute(
            "INSERT INTO tenant_backup.backups (tenant_id, tenant_column, nom, type, format, status, started_at) "
            "VALUES (%s, 'etablissement_id', 'died', 'full', 'csv', 'in_progress', now()) RETURNING id",
            (tenant.id,),
        ).fetchone()
    assert stale is not None
    backup_tenant(tenant_id=tenant.id, profile="pos", categories=["imprimantes"], force=True)
    row = _ledger(pos_db, str(stale[0]))
    assert row["status"] == "failed" and "reaped" in row["error_message"]


def test_second_backup_within_five_minutes_is_throttled_unless_forced(
    crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[2]
    first = backup_tenant(tenant_id=tenant.id, profile="crm", categories=["company"])
    with pytest.raises(ThrottledError, match=r"at most one backup per 5 minutes.*--force") as info:
        backup_tenant(tenant_id=tenant.id, profile="crm", categories=["company"])
    assert info.value.backup_id == first.backup_id
    forced = backup_tenant(tenant_id=tenant.id, profile="crm", categories=["company"], force=True)
    assert [r["status"] for r in _backup_rows(crm_db, tenant.id)] == ["completed", "completed"]
    assert forced.backup_id != first.backup_id


def test_non_admin_requester_is_refused_and_logged(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2]
    before = len(_backup_rows(pos_db, tenant.id))
    with pytest.raises(PermissionDeniedError, match="role 'CAISSIER'.*SUPER_ADMIN / ADMIN"):
        backup_tenant(tenant_id=tenant.id, profile="pos", requested_by=uuid.UUID(tenant.member_id), force=True)
    other_admin = pos_db.tenants[0].admin_id  # an admin, but of another tenant
    with pytest.raises(PermissionDeniedError, match="is not a user of"):
        backup_tenant(tenant_id=tenant.id, profile="pos", requested_by=uuid.UUID(other_admin), force=True)
    assert len(_backup_rows(pos_db, tenant.id)) == before
    failed = [log for log in _logs(pos_db, tenant.id) if log["result"] == "failed"]
    assert str(failed[-1]["performed_by"]) == other_admin and "not a user" in failed[-1]["error_message"]
    ok = backup_tenant(
        tenant_id=tenant.id,
        profile="pos",
        requested_by=uuid.UUID(tenant.admin_id),
        force=True,
        categories=["zones"] if False else ["tables"],
    )
    assert str(_ledger(pos_db, ok.backup_id)["created_by"]) == tenant.admin_id


def test_a_deactivated_admin_may_neither_back_up_nor_restore_their_tenant(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2]
    backup = backup_tenant(tenant_id=tenant.id, profile="pos", categories=["tables"], force=True)
    with pos_db.connect() as conn:
        conn.execute("UPDATE utilisateurs SET actif = false WHERE id = %s", (tenant.admin_id,))
    try:
        with pytest.raises(
            PermissionDeniedError, match=r"has role '\w+' in tenant .* but is deactivated \(utilisateurs.actif"
        ):
            backup_tenant(tenant_id=tenant.id, profile="pos", requested_by=uuid.UUID(tenant.admin_id), force=True)
        with pytest.raises(PermissionDeniedError, match="deactivated"):
            restore_backup(
                backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", requested_by=uuid.UUID(tenant.admin_id)
            )
    finally:
        with pos_db.connect() as conn:
            conn.execute("UPDATE utilisateurs SET actif = true WHERE id = %s", (tenant.admin_id,))
    ok = backup_tenant(
        tenant_id=tenant.id, profile="pos", requested_by=uuid.UUID(tenant.admin_id), categories=["tables"], force=True
    )
    assert ok.record_count == backup.record_count


def test_an_admin_rule_naming_a_missing_column_is_a_configuration_error_that_names_it(pos_db: DemoDatabase) -> None:
    profile = load_profile("pos")
    assert profile.admin is not None
    wrong = profile.model_copy(update={"admin": profile.admin.model_copy(update={"active_column": "is_enabled"})})
    tenant = pos_db.tenants[0]
    with pos_db.connect() as conn, pytest.raises(ConfigurationError, match=r"is_enabled.*active_column"):
        check_admin(conn, wrong, tenant.id, tenant.admin_id, "back up")


def test_unknown_category_is_refused_before_anything_is_written(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[1]
    before = len(_backup_rows(pos_db, tenant.id))
    with pytest.raises(UnknownCategoryError, match="'factures'.*choose among"):
        backup_tenant(tenant_id=tenant.id, profile="pos", categories=["factures"], force=True)
    assert len(_backup_rows(pos_db, tenant.id)) == before


def test_same_flow_writes_to_s3(
    crm_db: DemoDatabase, env: dict[str, Any], s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    url, options = s3_bucket
    env["use"](crm_db, url, options)
    tenant = crm_db.tenants[0]
    result = backup_tenant(tenant_id=tenant.id, profile="crm", force=True)
    folder = tenant_folder(crm_db.url, tenant.id)
    assert result.storage_path.startswith(f"{url}/{folder}/")
    storage = Storage(url, options)
    assert storage.list(folder) == [storage.key_of(result.storage_path)]  # no .partial left behind
    archive = read_artifact(url, result.storage_path, options)
    assert manifest_of(archive)["total_records"] == result.record_count
    with connect(crm_db.url) as conn:
        scope = scopes(conn, "crm")["order_items"]
        assert archive.read("order_items.csv") == tenant_csv(conn, scope, tenant.id)


def test_unreachable_storage_fails_clearly_with_ledger_row_failed(
    pos_db: DemoDatabase, env: dict[str, Any], s3_endpoint: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env["use"](pos_db, "s3://nowhere/backups", s3_options(dead))
    tenant = pos_db.tenants[0]
    with pytest.raises(StorageError, match="cannot be reached"):
        backup_tenant(tenant_id=tenant.id, profile="pos", force=True)
    row = _backup_rows(pos_db, tenant.id)[-1]
    assert row["status"] == "failed" and "storage s3://nowhere/backups cannot be reached" in row["error_message"]
    assert row["storage_path"] is None


def test_backup_all_tenants_is_one_task_run_per_tenant_and_one_summary(
    crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    env["use"](crm_db)
    state = backup_all_tenants(profile="crm", categories=["projects"], force=True, return_state=True)
    outcomes = state.result()
    assert sorted(o.tenant_id for o in outcomes) == sorted(t.id for t in crm_db.tenants)
    assert {o.status for o in outcomes} == {"completed"}
    for o in outcomes:
        row = _ledger(crm_db, str(o.backup_id))
        assert row["backup_type"] == "scheduled" and row["record_count"] == o.record_count
        assert row["metadata"]["flow_run_id"] == str(state.state_details.flow_run_id)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert run.name == "backup-all-tenants-crm"
    tenant_runs = sorted(t.name for t in tasks if t.name.startswith("backup-"))
    assert tenant_runs == sorted(f"backup-{slug(t.name)}-{t.id[:8]}" for t in crm_db.tenants)
    assert len(tasks) == len(crm_db.tenants) + 1  # and the list of tenants: no task run per table
    assert [a.key for a in artifacts if a.type == "markdown"] == ["backup-all-tenants"]


def test_a_tenant_that_fails_is_a_failed_task_run_and_the_run_fails_listing_every_tenant(
    crm_db: DemoDatabase, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    env["use"](crm_db)
    monkeypatch.setenv("TENANT_BACKUP_LOCK_TIMEOUT", "1s")
    busy = crm_db.tenants[0]
    with crm_db.connect() as holder:  # another run of that tenant holds its lock
        holder.execute("SELECT pg_advisory_lock(hashtext('tenant-backup'), hashtext(%s))", (busy.id,))
        state = backup_all_tenants(profile="crm", categories=["projects"], force=True, return_state=True)
    assert state.is_failed() and "1 of 3 tenant backups failed" in str(state.message)
    outcomes = {o.tenant_id: o for o in state.result(raise_on_failure=False)}
    assert outcomes[busy.id].status == "failed" and "its lock is held by" in str(outcomes[busy.id].error)
    assert [o.status for t, o in outcomes.items() if t != busy.id] == ["completed", "completed"]
    run_id = state.state_details.flow_run_id

    def settled() -> dict[str, str | None] | None:
        """The task runs' states, once the server has every one's final state (a busy shared
        server may still be writing the last one when the flow returns)."""
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        states = {t.name: t.state_type.value if t.state_type else None for t in tasks}
        return states if len(states) == 4 and "RUNNING" not in states.values() else None

    by_name = wait_for("the task runs' final states", settled, timeout=30)
    assert by_name[f"backup-{slug(busy.name)}-{busy.id[:8]}"] == "FAILED"
    assert sorted(by_name.values()) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]  # and list-tenants


def test_blocks_name_where_things_live_and_keep_the_url_secret(
    pos_db: DemoDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks import BackupStorage, TenantDatabase

    for name in ("TENANT_BACKUP_DATABASE_URL", "TENANT_BACKUP_STORAGE_URL", "TENANT_BACKUP_STORAGE_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    suffix = uuid.uuid4().hex[:8]
    TenantDatabase(url=pos_db.url).save(f"db-{suffix}")
    BackupStorage(url=f"file://{tmp_path}/blocks").save(f"store-{suffix}")
    assert "postgres" not in str(TenantDatabase.load(f"db-{suffix}").model_dump()["url"])  # masked
    result = backup_tenant(
        tenant_id=pos_db.tenants[0].id,
        profile="pos",
        categories=["tables"],
        force=True,
        database_block=f"db-{suffix}",
        storage_block=f"store-{suffix}",
    )
    assert result.storage_path.startswith(f"file://{tmp_path}/blocks/")
