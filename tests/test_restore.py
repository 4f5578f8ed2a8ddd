"""The restore flow on real PostgreSQL and a real Prefect API: exact round trips, all or nothing."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.exceptions import CancelledRun

from flows.backup import backup_tenant
from flows.restore import answer_approval, restore_backup, verify_backup
from tenant_backup import progress
from tenant_backup.errors import (
    PermissionDeniedError,
    RestoreCheckError,
    RestoreFailedError,
    RestoreRefusedError,
    VerificationError,
)
from tenant_backup.storage import Storage
from tests.conftest import DemoDatabase
from tests.helpers import state_of, terminate_lock_holders

pytestmark = pytest.mark.usefixtures("prefect_api")

# Changes an app might make after a backup: per schema, statements on one tenant (%(t)s).
MUTATIONS = {
    "pos": [
        "DELETE FROM lignes_vente WHERE vente_id IN (SELECT id FROM ventes WHERE etablissement_id = %(t)s "
        "ORDER BY id LIMIT 5)",
        "DELETE FROM paiements WHERE vente_id IN (SELECT id FROM ventes WHERE etablissement_id = %(t)s "
        "ORDER BY id LIMIT 5)",
        "DELETE FROM ventes WHERE id IN (SELECT id FROM ventes WHERE etablissement_id = %(t)s ORDER BY id LIMIT 5)",
        "UPDATE clients SET nom = nom || ' (modifié)', notes = NULL WHERE id IN "
        "(SELECT id FROM clients WHERE etablissement_id = %(t)s ORDER BY id LIMIT 3)",
        "UPDATE produits SET prix_vente = prix_vente + 1 WHERE etablissement_id = %(t)s",
        "INSERT INTO zones (etablissement_id, nom) VALUES (%(t)s, 'Nouvelle zone')",
        "INSERT INTO categories (etablissement_id, parent_id, nom) SELECT %(t)s, id, 'Sous-catégorie' "
        "FROM categories WHERE etablissement_id = %(t)s ORDER BY id LIMIT 1",
    ],
    "crm": [
        "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE company_id = %(t)s ORDER BY id "
        "LIMIT 4)",
        "UPDATE work_orders SET order_id = NULL WHERE order_id IN (SELECT id FROM orders WHERE company_id = %(t)s "
        "ORDER BY id LIMIT 4)",
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE company_id = %(t)s ORDER BY id LIMIT 4)",
        "UPDATE contacts SET tags = ARRAY['changed'], address = E'new\\naddress' WHERE company_id = %(t)s",
        "UPDATE project_tasks SET parent_task_id = NULL, estimate = interval '1 day' WHERE project_id IN "
        "(SELECT id FROM projects WHERE company_id = %(t)s)",
        "INSERT INTO leads (company_id, name) VALUES (%(t)s, 'New lead, \"hot\"')",
    ],
}


def _mutate(db: DemoDatabase, schema: str, tenant: str) -> None:
    with db.connect() as conn, conn.transaction():
        for statement in MUTATIONS[schema]:
            conn.execute(statement, {"t": tenant})


def _wipe(db: DemoDatabase, schema: str, tenant: str) -> None:
    """Delete every row of the tenant but its tenant-table row (an emptied tenant)."""
    statements = {
        "pos": [
            "DELETE FROM lignes_vente WHERE vente_id IN (SELECT id FROM ventes WHERE etablissement_id = %(t)s)",
            "DELETE FROM paiements WHERE etablissement_id = %(t)s",
            "DELETE FROM ventes WHERE etablissement_id = %(t)s",
            "DELETE FROM sessions_caisse WHERE etablissement_id = %(t)s",
            "DELETE FROM mouvements_stock WHERE etablissement_id = %(t)s",
            "DELETE FROM supplements WHERE produit_id IN (SELECT id FROM produits WHERE etablissement_id = %(t)s)",
            "DELETE FROM produits WHERE etablissement_id = %(t)s",
            "UPDATE categories SET parent_id = NULL WHERE etablissement_id = %(t)s",
            "DELETE FROM categories WHERE etablissement_id = %(t)s",
            "DELETE FROM tables WHERE etablissement_id = %(t)s",
            "DELETE FROM zones WHERE etablissement_id = %(t)s",
            "DELETE FROM imprimantes WHERE etablissement_id = %(t)s",
            "DELETE FROM clients WHERE etablissement_id = %(t)s",
            "DELETE FROM audit_logs WHERE etablissement_id = %(t)s",
            "DELETE FROM utilisateurs WHERE etablissement_id = %(t)s",
        ],
        "crm": [
            "DELETE FROM work_orders WHERE company_id = %(t)s",
            "UPDATE project_tasks SET parent_task_id = NULL WHERE project_id IN "
            "(SELECT id FROM projects WHERE company_id = %(t)s)",
            "DELETE FROM project_tasks WHERE project_id IN (SELECT id FROM projects WHERE company_id = %(t)s)",
            "DELETE FROM projects WHERE company_id = %(t)s",
            "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE company_id = %(t)s)",
            "DELETE FROM orders WHERE company_id = %(t)s",
            "DELETE FROM contacts WHERE company_id = %(t)s",
            "DELETE FROM leads WHERE company_id = %(t)s",
            "DELETE FROM profiles WHERE company_id = %(t)s",
        ],
    }[schema]
    with db.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement, {"t": tenant})


def _others(db: DemoDatabase, schema: str, tenant: str) -> dict[str, dict[str, bytes]]:
    return {t.id: state_of(db.url, schema, t.id) for t in db.tenants if t.id != tenant}


def _db(schema: str, pos_db: DemoDatabase, crm_db: DemoDatabase) -> DemoDatabase:
    return pos_db if schema == "pos" else crm_db


def _logs(db: DemoDatabase, tenant: str, action: str = "restore") -> list[dict[str, Any]]:
    with db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM tenant_backup.backup_restore_logs WHERE tenant_id = %s AND action = %s ORDER BY created_at",
            (tenant, action),
        ).fetchall()


@pytest.mark.parametrize("schema", ["pos", "crm"])
def test_replace_round_trip_gives_the_backed_up_rows_and_leaves_others_alone(
    schema: str, pos_db: DemoDatabase, crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    db = _db(schema, pos_db, crm_db)
    env["use"](db)
    tenant = db.tenants[0].id
    before = state_of(db.url, schema, tenant)
    backup = backup_tenant(tenant_id=tenant, profile=schema, force=True)
    _mutate(db, schema, tenant)
    others = _others(db, schema, tenant)
    assert state_of(db.url, schema, tenant) != before
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", mode="replace")
    assert result.status == "completed" and result.applied
    assert state_of(db.url, schema, tenant) == before
    assert _others(db, schema, tenant) == others
    counts = {name: (c.inserted, c.updated, c.deleted) for name, c in result.tables.items()}
    changed = {name: count for name, count in counts.items() if count != (0, 0, 0)}
    if schema == "pos":
        assert changed["ventes"] == (5, 0, 0) and changed["lignes_vente"][0] > 0
        assert changed["clients"] == (0, 3, 0) and changed["zones"] == (0, 0, 1)
        assert changed["produits"][1] == result.tables["produits"].rows  # every price changed back
    else:
        assert changed["orders"] == (4, 0, 0) and changed["leads"] == (0, 0, 1)
    log = _logs(db, tenant)[-1]
    assert log["result"] == "success" and log["details"]["mode"] == "replace"


@pytest.mark.parametrize("schema", ["pos", "crm"])
def test_full_restore_into_an_emptied_tenant(
    schema: str, pos_db: DemoDatabase, crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    db = _db(schema, pos_db, crm_db)
    env["use"](db)
    tenant = db.tenants[1].id
    before = state_of(db.url, schema, tenant)
    backup = backup_tenant(tenant_id=tenant, profile=schema, force=True)
    _wipe(db, schema, tenant)
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert state_of(db.url, schema, tenant) == before
    assert sum(c.inserted for c in result.tables.values()) == backup.record_count - 1  # all but the tenant row


def test_merge_inserts_and_updates_but_deletes_nothing(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2].id
    before = state_of(pos_db.url, "pos", tenant)
    backup = backup_tenant(tenant_id=tenant, profile="pos", force=True)
    _mutate(pos_db, "pos", tenant)
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", mode="merge")
    after = state_of(pos_db.url, "pos", tenant)
    assert all(c.deleted == 0 for c in result.tables.values())
    for table in before:
        if table in ("zones", "categories"):  # rows added after the backup stay
            assert len(after[table].splitlines()) == len(before[table].splitlines()) + 1
        else:
            assert after[table] == before[table], table


def test_dry_run_counts_the_changes_and_writes_nothing(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="crm", force=True)
    _mutate(crm_db, "crm", tenant)
    mutated = state_of(crm_db.url, "crm", tenant)
    plan = restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
    assert plan.status == "planned" and not plan.applied
    assert state_of(crm_db.url, "crm", tenant) == mutated
    assert (plan.tables["orders"].inserted, plan.tables["leads"].deleted) == (4, 1)
    assert plan.tables["order_items"].inserted > 0
    assert plan.tables["contacts"].updated == plan.tables["contacts"].rows
    # The counts are what the apply then does.
    done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert done.tables == plan.tables


def test_constraint_violation_in_the_last_table_rolls_everything_back(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", force=True)
    _mutate(pos_db, "pos", tenant)
    with pos_db.connect() as conn:  # new rule the backed-up rows break; old rows are not checked
        conn.execute("ALTER TABLE lignes_vente ADD CONSTRAINT tb_test_qty CHECK (quantite > 100) NOT VALID")
    mutated = state_of(pos_db.url, "pos", tenant)
    try:
        with pytest.raises(RestoreFailedError, match="table lignes_vente .*violates constraint tb_test_qty") as caught:
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        assert isinstance(caught.value.__cause__, psycopg.errors.CheckViolation) and caught.value.exit_code == 3
    finally:
        with pos_db.connect() as conn:
            conn.execute("ALTER TABLE lignes_vente DROP CONSTRAINT tb_test_qty")
    assert state_of(pos_db.url, "pos", tenant) == mutated
    assert _logs(pos_db, tenant)[-1]["result"] == "failed"


def test_terminated_connection_mid_restore_changes_nothing(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[2].id
    backup = backup_tenant(tenant_id=tenant, profile="crm", force=True)
    _mutate(crm_db, "crm", tenant)
    mutated = state_of(crm_db.url, "crm", tenant)
    first = threading.Lock()

    def kill_restore(event: progress.Progress) -> None:
        if event.done and first.acquire(blocking=False):  # a table is staged: the transaction is open
            terminate_lock_holders(crm_db.url)

    progress.subscribe(kill_restore)
    try:
        with pytest.raises(RestoreFailedError, match="connection to the database was lost .* nothing changed"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    finally:
        progress.unsubscribe(kill_restore)
    assert state_of(crm_db.url, "crm", tenant) == mutated


def _corrupt(env: dict[str, Any], storage_path: str, how: str) -> None:
    path = Path(Storage(env["store"]).path(Storage(env["store"]).key_of(storage_path)))
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) * 2 // 3 :]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_artifact_is_refused_with_no_write(how: str, pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    _mutate(pos_db, "pos", tenant)
    mutated = state_of(pos_db.url, "pos", tenant)
    _corrupt(env, backup.storage_path, how)
    with pytest.raises(VerificationError, match="does not match the ledger's checksum"):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert state_of(pos_db.url, "pos", tenant) == mutated
    assert "checksum" in _logs(pos_db, tenant)[-1]["error_message"]


def test_a_table_whose_bytes_differ_from_its_manifest_is_refused_as_it_is_read_with_no_write(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    """The whole file matches the ledger (the ledger's checksum made to match, as a writer's bug
    would leave it), but one table differs from its sha256 in the manifest: refused while the
    restore stages it, inside its transaction, before any write."""
    import hashlib
    import zipfile

    env["use"](pos_db)
    tenant = pos_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    _mutate(pos_db, "pos", tenant)
    mutated = state_of(pos_db.url, "pos", tenant)
    path = Path(Storage(env["store"]).path(Storage(env["store"]).key_of(backup.storage_path)))
    with zipfile.ZipFile(path) as old:
        members = {info.filename: old.read(info) for info in old.infolist()}
    members["clients.csv"] = members["clients.csv"].replace(b"@", b"#", 1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for name, data in members.items():
            new.writestr(name, data)
    with pos_db.connect() as conn:
        checksum = f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        conn.execute("UPDATE tenant_backup.backups SET checksum = %s WHERE id = %s", (checksum, backup.backup_id))
    for dry_run in (True, False):
        with pytest.raises(VerificationError, match="table clients of backup .* does not match its sha256"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", dry_run=dry_run)
    assert state_of(pos_db.url, "pos", tenant) == mutated


def test_another_tenants_artifact_is_refused(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    mine, theirs = pos_db.tenants[0].id, pos_db.tenants[1].id
    a = backup_tenant(tenant_id=mine, profile="pos", categories=["tables"], force=True)
    b = backup_tenant(tenant_id=theirs, profile="pos", categories=["tables"], force=True)
    storage = Storage(env["store"])
    Path(storage.path(storage.key_of(a.storage_path))).write_bytes(
        Path(storage.path(storage.key_of(b.storage_path))).read_bytes()
    )
    with pos_db.connect() as conn:  # even with the ledger's checksum made to match
        conn.execute("UPDATE tenant_backup.backups SET checksum = %s WHERE id = %s", (b.checksum, a.backup_id))
    before = state_of(pos_db.url, "pos", mine)
    with pytest.raises(VerificationError, match="belongs to backup"):
        restore_backup(backup_id=uuid.UUID(a.backup_id), confirm="RESTORE")
    assert state_of(pos_db.url, "pos", mine) == before


def test_wrong_confirmation_and_non_admin_are_refused_and_logged(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[0]
    backup = backup_tenant(tenant_id=tenant.id, profile="crm", categories=["company"], force=True)
    with crm_db.connect() as conn:
        conn.execute("UPDATE companies SET name = 'Renamed' WHERE id = %s", (tenant.id,))
    before = state_of(crm_db.url, "crm", tenant.id)
    with pytest.raises(RestoreRefusedError, match="pass --confirm RESTORE"):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="restore")
    with pytest.raises(PermissionDeniedError, match="only admin users may restore"):
        restore_backup(
            backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", requested_by=uuid.UUID(tenant.member_id)
        )
    assert state_of(crm_db.url, "crm", tenant.id) == before
    logs = _logs(crm_db, tenant.id)[-2:]
    assert [log["result"] for log in logs] == ["failed", "failed"]
    assert str(logs[-1]["performed_by"]) == tenant.member_id
    done = restore_backup(
        backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", requested_by=uuid.UUID(tenant.admin_id)
    )
    assert done.tables["companies"].updated == 1


def test_sequences_are_moved_past_restored_ids(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["audit"], force=True)
    with pos_db.connect() as conn:
        conn.execute("DELETE FROM audit_logs WHERE etablissement_id = %s", (tenant,))
        conn.execute("ALTER TABLE audit_logs ALTER COLUMN id RESTART WITH 1")  # as in a rebuilt database
    restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    with pos_db.connect() as conn:
        conn.execute("INSERT INTO audit_logs (etablissement_id, action, entite) VALUES (%s, 'LOGIN', 'x')", (tenant,))
        top = conn.execute("SELECT max(id) FROM audit_logs").fetchone()
        new = conn.execute("SELECT id FROM audit_logs WHERE entite = 'x'").fetchone()
    assert top is not None and new is not None and new[0] == top[0]


def test_verify_checks_without_writing(crm_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](crm_db)
    tenant = crm_db.tenants[1].id
    backup = backup_tenant(tenant_id=tenant, profile="crm", categories=["sales"], force=True)
    result = verify_backup(backup_id=uuid.UUID(backup.backup_id))
    assert result.status == "verified" and not result.applied
    assert {t: c.rows for t, c in result.tables.items()} == {t: backup.tables[t] for t in result.tables}
    assert _logs(crm_db, tenant, "verify")[-1]["result"] == "success"


def _paused_run(db: DemoDatabase, backup_id: str, answer: dict[str, Any]) -> tuple[BaseException | None, Any, Any]:
    """Start a restore that waits for approval, answer it through the Prefect API (first with a bare
    Resume, which must be refused), return its outcome and its flow run as the API has it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = restore_backup(
                backup_id=uuid.UUID(backup_id),
                confirm="RESTORE",
                require_approval=True,
                approval_timeout_seconds=60,
                approval_poll_seconds=1,
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        paused = None
        # Paused runs only: the session's server holds many runs of other tests (CI missed it in 20).
        only_paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        while paused is None and time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=only_paused, limit=50)
            paused = next(
                (r for r in runs if r.state and r.state.is_paused() and r.parameters.get("backup_id") == backup_id),
                None,
            )
            time.sleep(0.5)
        assert paused is not None, "the restore never paused for approval"
        form = client.read_flow_run(paused.id)
        assert form.state is not None and form.state.is_paused()
    with pytest.raises(RuntimeError, match="decision"):  # no decision made: not an answer, still paused
        resume_flow_run(paused.id, run_input={"approver": "someone"})
    answer_approval(paused.id, **answer)
    thread.join(120)
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(paused.id)
    return outcome.get("error"), outcome.get("result"), final


def test_pause_then_approve_through_the_api_restores(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[1].id
    before = state_of(pos_db.url, "pos", tenant)
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET points_fidelite = -1 WHERE etablissement_id = %s", (tenant,))
    started = time.monotonic()
    error, result, run = _paused_run(pos_db, backup.backup_id, {"approve": True, "approver": "boss", "reason": "ok"})
    total = time.monotonic() - started
    assert error is None and result.applied and run.state.is_completed()
    assert state_of(pos_db.url, "pos", tenant) == before
    assert result.approval.approver == "boss" and result.approval.reason == "ok"
    # The report's duration is the work: the wait for the answer is counted apart, not in it.
    assert result.approval.waited_seconds > 0.5 and result.seconds + result.approval.waited_seconds <= total
    logged = _logs(pos_db, tenant, "restore")[-1]
    assert logged["result"] == "success" and logged["details"]["approval"]["approver"] == "boss"
    assert logged["details"]["approval"]["reason"] == "ok" and logged["details"]["approval"]["approved"]


def test_pause_then_reject_through_the_api_changes_nothing(pos_db: DemoDatabase, env: dict[str, Any]) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[2].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET points_fidelite = -1 WHERE etablissement_id = %s", (tenant,))
    mutated = state_of(pos_db.url, "pos", tenant)
    error, _, run = _paused_run(pos_db, backup.backup_id, {"approve": False, "approver": "boss", "reason": "not now"})
    assert isinstance(error, CancelledRun) and "rejected by boss: not now" in str(error)
    assert run.state.is_cancelled() and "not now" in run.state.message  # a "no" is not a failure
    assert state_of(pos_db.url, "pos", tenant) == mutated
    logged = _logs(pos_db, tenant, "restore")[-1]
    assert logged["result"] == "failed" and logged["details"]["approval"]["approver"] == "boss"
    assert not logged["details"]["approval"]["approved"] and logged["details"]["approval"]["reason"] == "not now"


def test_rows_outside_the_restore_that_deletes_would_reach_are_counted_through_cascades_and_refused(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["produits"], force=True)
    with pos_db.connect() as conn:  # tables the backup does not hold, two cascades deep
        conn.execute(
            "CREATE TABLE promos (id serial PRIMARY KEY, produit_id uuid REFERENCES produits ON DELETE CASCADE)"
        )
        conn.execute("CREATE TABLE promo_uses (promo_id integer REFERENCES promos ON DELETE CASCADE, at date)")
        new = conn.execute(
            "INSERT INTO produits (etablissement_id, nom, prix_vente) VALUES (%s, 'new', 1) RETURNING id", (tenant,)
        ).fetchone()
        promo = conn.execute("INSERT INTO promos (produit_id) VALUES (%s) RETURNING id", (new[0],)).fetchone()  # type: ignore[index]
        conn.execute("INSERT INTO promo_uses VALUES (%s, '2026-01-01'), (%s, '2026-01-02')", (promo[0], promo[0]))  # type: ignore[index]
    changed = state_of(pos_db.url, "pos", tenant)
    try:
        plan = restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
        reached = {(o["table"], o["rows"], o["via"]) for o in plan.outside}
        assert reached == {("promos", 1, "produits -> promos"), ("promo_uses", 2, "produits -> promos -> promo_uses")}
        with pytest.raises(
            RestoreRefusedError,
            match=r"2 row\(s\) of promo_uses \(cascade, produits -> promos -> promo_uses\).*--cascade",
        ):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        assert state_of(pos_db.url, "pos", tenant) == changed
        done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", cascade=True)
        assert done.tables["produits"].deleted == 1
        with pos_db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM promo_uses").fetchone() == (0,)
    finally:
        with pos_db.connect() as conn:
            conn.execute("DROP TABLE promo_uses, promos")


def test_a_key_taken_by_another_tenant_since_the_backup_is_named_by_a_restore(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    env["use"](pos_db)
    mine, theirs = pos_db.tenants[1].id, pos_db.tenants[2].id
    backup = backup_tenant(tenant_id=mine, profile="pos", categories=["tables"], force=True)
    with pos_db.connect() as conn:  # the app moved one of my zones' ids to another tenant
        zone = conn.execute("SELECT min(id::text)::uuid FROM zones WHERE etablissement_id = %s", (mine,)).fetchone()
        assert zone is not None
        conn.execute("UPDATE tables SET zone_id = NULL WHERE zone_id = %s", (zone[0],))
        conn.execute("DELETE FROM zones WHERE id = %s", (zone[0],))
        conn.execute("INSERT INTO zones (id, etablissement_id, nom) VALUES (%s, %s, 'taken')", (zone[0], theirs))
    changed = state_of(pos_db.url, "pos", mine)
    try:
        with pytest.raises(RestoreRefusedError, match="zones in the backup have the key .*of a row of another tenant"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
        with pytest.raises(RestoreCheckError, match="zones .*have the key \\(id\\) of a row of another tenant"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        assert state_of(pos_db.url, "pos", mine) == changed
    finally:
        with pos_db.connect() as conn:
            conn.execute("UPDATE zones SET etablissement_id = %s, nom = 'back' WHERE id = %s", (mine, zone[0]))
