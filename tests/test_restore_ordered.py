"""Restore as an ordinary role, which may not set session_replication_role: rows go in
foreign-key order, self-references are inserted NULL and set after, and the app's triggers fire."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import RestoreCheckError
from tenant_backup.ledger import migrate
from tests.conftest import DemoDatabase
from tests.helpers import grant_app_role, state_of, url_as
from tests.test_restore import _wipe

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def app_role(pos_db: DemoDatabase, crm_db: DemoDatabase) -> Iterator[str]:
    """A login role with DML rights on both demo databases and nothing more; dropped after."""
    role = f"tb_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pos_db.server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    for db in (pos_db, crm_db):
        with db.connect() as conn:
            migrate(conn, "tenant_backup")
            grant_app_role(conn, role)
    try:
        yield role
    finally:
        for db in (pos_db, crm_db):
            with db.connect() as conn:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pos_db.server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("schema", ["pos", "crm"])
def test_emptied_tenant_restores_in_key_order_without_replica_mode(
    schema: str,
    pos_db: DemoDatabase,
    crm_db: DemoDatabase,
    env: dict[str, Any],
    app_role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = pos_db if schema == "pos" else crm_db
    env["use"](db)
    tenant = db.tenants[2].id
    before = state_of(db.url, schema, tenant)
    backup = backup_tenant(tenant_id=tenant, profile=schema, force=True)
    _wipe(db, schema, tenant)
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", url_as(db.url, app_role))
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert result.triggers == "fired"  # this role may not skip them
    assert state_of(db.url, schema, tenant) == before


def test_trigger_that_alters_restored_rows_fails_the_check_and_rolls_back(
    pos_db: DemoDatabase, env: dict[str, Any], app_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env["use"](pos_db)
    tenant = pos_db.tenants[0].id
    backup = backup_tenant(tenant_id=tenant, profile="pos", categories=["clients"], force=True)
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET nom = 'renamed' WHERE etablissement_id = %s", (tenant,))
        conn.execute(
            "CREATE FUNCTION tb_test_upper() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.nom := upper(NEW.nom); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER tb_test_upper BEFORE INSERT OR UPDATE ON clients "
            "FOR EACH ROW EXECUTE FUNCTION tb_test_upper()"
        )
    changed = state_of(pos_db.url, "pos", tenant)
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", url_as(pos_db.url, app_role))
    try:
        with pytest.raises(RestoreCheckError, match="table clients .* differs from the backup"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    finally:
        with pos_db.connect() as conn:
            conn.execute("DROP TRIGGER tb_test_upper ON clients; DROP FUNCTION tb_test_upper()")
    assert state_of(pos_db.url, "pos", tenant) == changed


def test_a_kept_row_whose_parent_the_restore_deletes_fails_the_key_check_and_rolls_back(
    pos_db: DemoDatabase, env: dict[str, Any]
) -> None:
    """A sale of tenant A names a client of tenant B when A is backed up; the client then moves to
    A. Restoring A deletes the client (A's now, not in the backup) and keeps the sale unchanged:
    replica mode skips the key's trigger, so the check before commit must find the sale's
    dangling key, though the apply wrote nothing of ventes."""
    env["use"](pos_db)
    a, b = pos_db.tenants[0].id, pos_db.tenants[1].id
    with pos_db.connect() as conn:
        row = conn.execute("SELECT id, client_id FROM ventes WHERE etablissement_id = %s ORDER BY id LIMIT 1", (a,))
        vente, old_client = row.fetchone() or (None, None)
        found = conn.execute("SELECT id FROM clients WHERE etablissement_id = %s ORDER BY id LIMIT 1", (b,)).fetchone()
        assert vente is not None and found is not None
        client = found[0]
        conn.execute("UPDATE ventes SET client_id = %s WHERE id = %s", (client, vente))
    try:
        backup = backup_tenant(tenant_id=a, profile="pos", categories=["ventes", "clients"], force=True)
        with pos_db.connect() as conn:
            conn.execute("UPDATE clients SET etablissement_id = %s WHERE id = %s", (a, client))
        before = state_of(pos_db.url, "pos", a)
        with pytest.raises(RestoreCheckError, match=r"1 row\(s\) of ventes reference missing rows of clients"):
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        assert state_of(pos_db.url, "pos", a) == before
    finally:
        with pos_db.connect() as conn:
            conn.execute("UPDATE clients SET etablissement_id = %s WHERE id = %s", (b, client))
            conn.execute("UPDATE ventes SET client_id = %s WHERE id = %s", (old_client, vente))
