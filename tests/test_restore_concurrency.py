"""Another session writes while a restore that compares only changes runs (replica mode, no
trigger fires): the restore commits only rows equal to the backup's, touches no row of another
tenant, and fails loudly, rolling everything back, when the tenant's rows cannot equal the
backup's at commit. Nobody writing must not fail it.

Each test pauses a real restore (the CLI, without a Prefect server) on a row lock: a session
holds ``FOR UPDATE`` on a row the restore must update; once the restore waits for it, the test
writes as the app would, commits, and releases the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tenant_backup.ledger import migrate
from tests.conftest import Database, database_with, drop_database, make_database
from tests.helpers import grant_app_role, state_of, url_as

SCHEMA = """
CREATE TABLE orgs (id text PRIMARY KEY);
CREATE TABLE customers (id bigserial PRIMARY KEY, org_id text NOT NULL REFERENCES orgs ON DELETE CASCADE,
                        name text NOT NULL, note text);
CREATE TABLE orders (id bigserial PRIMARY KEY, org_id text NOT NULL REFERENCES orgs ON DELETE CASCADE,
                     customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE, total numeric(12, 2));
-- No tenant column: an item is its order's tenant's.
CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
                          qty integer NOT NULL);
INSERT INTO orgs VALUES ('acme'), ('beta');
INSERT INTO customers (org_id, name, note) SELECT o, o || '-' || g, 'n' || g
  FROM unnest(ARRAY['acme', 'beta']) o, generate_series(1, 50) g;
INSERT INTO orders (org_id, customer_id, total) SELECT org_id, id, id FROM customers;
INSERT INTO order_items (order_id, qty) SELECT id, g FROM orders, generate_series(1, 2) g;
"""

PROFILE = """
name = "shop"
tenant_column = "org_id"

[tenant_table]
name = "orgs"
key = "id"

[categories]
sales = ["customers", "orders", "order_items"]
"""

ACME_ITEMS = "SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.org_id = 'acme' AND i.id <> 1"


@pytest.fixture
def shop(pg_server: str) -> Iterator[Database]:
    with database_with(pg_server, SCHEMA) as db:
        yield db


Cli = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture(params=["superuser", "app role"])
def restorer(request: pytest.FixtureRequest, shop: Database) -> Iterator[str]:
    """Who restores: a superuser (replica mode: the restore compares once and writes by its delta)
    or a role with DML rights only (triggers fire: the full comparison, restore/apply.py)."""
    if request.param == "superuser":
        yield shop.url
        return
    role = f"tb_shop_{uuid.uuid4().hex[:8]}"
    with shop.connect() as conn:
        migrate(conn, "tenant_backup")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        grant_app_role(conn, role)
    try:
        yield url_as(shop.url, role)
    finally:
        with shop.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def cli(shop: Database, tmp_path: Path, restorer: str) -> Cli:
    """The CLI, without a Prefect server: backups as the superuser, restores as ``restorer``."""
    (tmp_path / "shop.toml").write_text(PROFILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TENANT_BACKUP_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        TENANT_BACKUP_STORAGE_URL=f"file://{tmp_path}/store",
        TENANT_BACKUP_LOCK_TIMEOUT="60s",
    )

    def run(*args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "tenant_backup.cli", *args, "--json"]
        url = restorer if args[0] == "restore" else shop.url
        return subprocess.Popen(
            command,
            env={**env, "TENANT_BACKUP_DATABASE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return run


def _backup(cli: Cli, tmp_path: Path) -> str:
    out, err = cli("backup", "--tenant", "acme", "--profile", _profile(tmp_path), "--force").communicate(timeout=60)
    assert out, err
    return str(json.loads(out)["backup_id"])


def _profile(tmp_path: Path) -> str:
    return str(tmp_path / "shop.toml")


def _paused_restore(
    shop: Database, cli: Cli, backup_id: str, held: str, during: Callable[[psycopg.Connection], None], *args: str
) -> tuple[int, str]:
    """Restore ``backup_id`` while a session holds ``held`` (``SELECT … FOR UPDATE``); once the
    restore waits for it, ``during(session)`` writes as the app would, and the session commits.
    The restore's exit status and stderr."""
    holder = shop.connect()
    holder.autocommit = False
    holder.execute(held)
    restore = cli("restore", backup_id, "--confirm", "RESTORE", *args)
    try:
        with shop.connect() as watch:
            deadline = time.monotonic() + 60
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s"
            while watch.execute(waiting, (shop.name,)).fetchone() == (0,):
                assert time.monotonic() < deadline and restore.poll() is None, restore.communicate()
                time.sleep(0.05)
        during(holder)
        holder.commit()
    finally:
        holder.rollback()
        holder.close()
    _, err = restore.communicate(timeout=60)
    return restore.returncode, err


HOLD_CUSTOMER = "SELECT 1 FROM customers WHERE id = 1 FOR UPDATE"  # acme's; the restore must update it


def _change_customer(shop: Database) -> None:
    with shop.connect() as conn:
        conn.execute("UPDATE customers SET note = 'changed since the backup' WHERE id = 1")


def test_a_row_the_restore_must_delete_but_another_session_moved_to_another_tenant_is_left_to_it(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    backup_id = _backup(cli, tmp_path)
    expected = state_of(shop.url, _profile(tmp_path), "acme")
    _change_customer(shop)
    with shop.connect() as conn:
        row = conn.execute("INSERT INTO customers (org_id, name) VALUES ('acme', 'added') RETURNING id").fetchone()
        assert row is not None
        added = row[0]

    def moved(session: psycopg.Connection) -> None:
        session.execute("UPDATE customers SET org_id = 'beta' WHERE id = %s", (added,))
        session.execute("INSERT INTO orders (org_id, customer_id, total) VALUES ('beta', %s, 1)", (added,))

    # The restore waits at its DELETE of that very row, while the app moves it.
    held = f"SELECT 1 FROM customers WHERE id = {added} FOR UPDATE"
    code, err = _paused_restore(shop, cli, backup_id, held, moved)
    assert code == 0, err  # acme is as backed up; the customer was beta's by then, not acme's to delete
    assert state_of(shop.url, _profile(tmp_path), "acme") == expected
    with shop.connect() as conn:
        assert conn.execute("SELECT org_id FROM customers WHERE id = %s", (added,)).fetchone() == ("beta",)
        dangling = (
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)"
        )
        assert conn.execute(dangling).fetchone() == (0,)


def test_a_row_the_restore_must_update_but_another_session_moved_to_another_tenant_fails_it(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    backup_id = _backup(cli, tmp_path)
    _change_customer(shop)

    def moved(session: psycopg.Connection) -> None:  # the row the restore waits for goes to beta
        session.execute("UPDATE customers SET org_id = 'beta' WHERE id = 1")
        session.execute("INSERT INTO orders (org_id, customer_id, total) VALUES ('beta', 1, 1)")

    code, err = _paused_restore(shop, cli, backup_id, HOLD_CUSTOMER, moved)
    assert code == 3 and "rolled back, nothing changed" in err, err
    assert "table customers" in err and "another tenant" in err, err
    with shop.connect() as conn:  # beta keeps its customer, as the app left it
        assert conn.execute("SELECT org_id, note FROM customers WHERE id = 1").fetchone() == (
            "beta",
            "changed since the backup",
        )


def test_the_row_the_restore_waits_for_rewritten_by_another_session_fails_it_instead_of_being_overwritten(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    backup_id = _backup(cli, tmp_path)
    _change_customer(shop)

    def rewritten(session: psycopg.Connection) -> None:
        session.execute("UPDATE customers SET note = 'the app wrote it during the restore' WHERE id = 1")

    code, err = _paused_restore(shop, cli, backup_id, HOLD_CUSTOMER, rewritten)
    assert code == 3, err
    assert "written by another session while the restore ran" in err and "customers" in err, err
    with shop.connect() as conn:
        assert conn.execute("SELECT note FROM customers WHERE id = 1").fetchone() == (
            "the app wrote it during the restore",
        )


def test_a_row_written_in_a_savepoint_of_a_transaction_begun_before_the_restore_and_committed_during_it_fails_it(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    """The row's xmin is a subtransaction's id, which no pg_snapshot lists (pg_visible_in_snapshot
    takes it for committed): the comparison's record of the young rows it saw must catch it."""
    backup_id = _backup(cli, tmp_path)
    _change_customer(shop)
    app = shop.connect()
    app.autocommit = False
    try:
        app.execute("SELECT pg_current_xact_id()")  # the app's transaction runs before the restore begins
        app.execute("SAVEPOINT app_step")
        app.execute("UPDATE customers SET note = 'written during the restore' WHERE id = 2")

        def commits(session: psycopg.Connection) -> None:
            app.execute("RELEASE SAVEPOINT app_step")
            app.commit()

        code, err = _paused_restore(shop, cli, backup_id, HOLD_CUSTOMER, commits)
    finally:
        app.close()
    assert code == 3, err
    assert "written by another session while the restore ran" in err and "customers" in err, err
    with shop.connect() as conn:
        assert conn.execute("SELECT note FROM customers WHERE id = 2").fetchone() == ("written during the restore",)
        assert conn.execute("SELECT note FROM customers WHERE id = 1").fetchone() == ("changed since the backup",)


def test_a_merge_fails_when_another_session_deletes_a_backed_up_row_though_an_extra_row_keeps_the_count(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    backup_id = _backup(cli, tmp_path)
    _change_customer(shop)
    with shop.connect() as conn:
        conn.execute("INSERT INTO order_items (order_id, qty) VALUES (1, 99)")  # acme's, not in the backup

    def deleted(session: psycopg.Connection) -> None:  # acme's, unchanged since the backup
        session.execute(f"DELETE FROM order_items WHERE id = ({ACME_ITEMS} ORDER BY i.id LIMIT 1)")

    code, err = _paused_restore(shop, cli, backup_id, HOLD_CUSTOMER, deleted, "--mode", "merge")
    assert code == 3, err
    assert "table order_items" in err and "rolled back, nothing changed" in err, err


def test_restoring_one_table_fails_when_rows_deleted_meanwhile_are_made_up_for_by_rows_moved_in_with_their_parent(
    shop: Database, cli: Cli, tmp_path: Path
) -> None:
    backup_id = _backup(cli, tmp_path)
    with shop.connect() as conn:
        conn.execute("UPDATE order_items SET qty = qty + 100 WHERE id = 1")  # the restore must update it

    def swapped(session: psycopg.Connection) -> None:
        # Two of acme's items go; a beta order moves to acme, and its two items (not written) with it.
        session.execute(f"DELETE FROM order_items WHERE id IN ({ACME_ITEMS} ORDER BY i.id LIMIT 2)")
        session.execute(
            "UPDATE orders SET org_id = 'acme' WHERE id = (SELECT max(id) FROM orders WHERE org_id = 'beta')"
        )

    held = "SELECT 1 FROM order_items WHERE id = 1 FOR UPDATE"
    code, err = _paused_restore(shop, cli, backup_id, held, swapped, "--table", "order_items")
    assert code == 3, err
    assert "table order_items" in err and "rolled back, nothing changed" in err, err


def test_a_merge_with_rows_the_backup_lacks_succeeds_while_another_database_holds_an_old_transaction(
    shop: Database, cli: Cli, tmp_path: Path, pg_server: str
) -> None:
    """A transaction running elsewhere in the cluster keeps every row written since it began
    young; the tenant's rows written before the restore, though not in the backup, are the
    restore's to keep (merge), not another session's writes during it."""
    backup_id = _backup(cli, tmp_path)
    other = make_database(pg_server)
    old = psycopg.connect(other.url)
    try:
        old.execute("SELECT pg_current_xact_id()")  # holds the cluster's xmin horizon back
        with shop.connect() as conn:
            conn.execute("INSERT INTO customers (org_id, name) VALUES ('acme', 'added after the backup')")
        _change_customer(shop)
        out, err = cli("restore", backup_id, "--confirm", "RESTORE", "--mode", "merge").communicate(timeout=60)
        assert out and json.loads(out)["status"] == "completed", err
    finally:
        old.rollback()
        old.close()
        drop_database(other)
    with shop.connect() as conn:
        assert conn.execute("SELECT note FROM customers WHERE id = 1").fetchone() == ("n1",)
        assert conn.execute("SELECT count(*) FROM customers WHERE name = 'added after the backup'").fetchone() == (1,)
