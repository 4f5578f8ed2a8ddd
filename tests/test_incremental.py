"""Incremental backups on real PostgreSQL: what changed is caught without trusting the app, a chain
restores the tenant exactly as it was at each link, and a chain goes as a whole."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.sequences.backup import backup_tenant
from flows.sequences.restore import ApprovalRequest, restore_backup, verify_backup
from tenant_backup.backup.steps import BackupRequest
from tenant_backup.cli.execute import local_runner
from tenant_backup.errors import (
    ConfigurationError,
    LedgerError,
    RestoreCheckError,
    RestoreRefusedError,
    VerificationError,
)
from tenant_backup.ledger import BackupRow
from tenant_backup.operations.retention import RetentionPolicy, decide
from tenant_backup.restore.steps import RestoreRequest
from tenant_backup.results import BackupResult
from tenant_backup.storage import Storage
from tests.conftest import Database, DemoDatabase, _demo, drop_database, make_database
from tests.helpers import manifest_of, read_artifact, state_of


@pytest.fixture
def pos(pg_server: str) -> Iterator[DemoDatabase]:
    """A POS database of its own (each test changes its rows)."""
    yield from _demo(pg_server, "pos", tenants=2, rows=300)


def _settle(url: str, timeout: float = 90) -> None:
    """Wait until every transaction that began before now has ended, anywhere on the server.

    A backup's snapshot records its oldest running transaction, and the next incremental takes
    every row written since that one began (see backup/changes.py): a transaction of another test
    left open across a backup would make it take more than the changes these tests count."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            oldest = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
            if oldest is not None and oldest[0] > row[0]:
                return
            time.sleep(0.1)


def _backup(
    env: dict[str, Any], tenant: str, kind: str = "incremental", *, settle: bool = True, **extra: Any
) -> BackupResult:
    request = BackupRequest(tenant_id=tenant, profile="pos", force=True, kind=kind, **extra)  # type: ignore[arg-type]
    if settle:
        _settle(env["db"].url)
    return backup_tenant(local_runner(), request, None, None)


def _restore(backup_id: str, **extra: Any) -> Any:
    req = RestoreRequest(backup_id=backup_id, confirm="RESTORE", **extra)
    return restore_backup(local_runner(), req, ApprovalRequest(), None, None)


def _run(db: Database, *statements: str, **params: Any) -> None:
    with db.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement, params or None)


def _manifest(env: dict[str, Any], result: BackupResult) -> dict[str, Any]:
    return manifest_of(read_artifact(env["store"], result.storage_path))


def test_a_chain_catches_every_kind_of_change_and_restores_the_tenant_as_at_each_link(
    env: dict[str, Any], pos: DemoDatabase
) -> None:
    env["use"](pos)
    a, b = pos.tenants[0].id, pos.tenants[1].id
    _run(pos, "ALTER TABLE clients ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()")
    base = _backup(env, a)
    assert base.parent_id is None and base.chain_note == "the tenant has no backup yet"
    states: dict[str, dict[str, bytes]] = {}
    steps = [
        # inserts
        ("INSERT INTO zones (etablissement_id, nom) VALUES (%(a)s, 'Mezzanine'), (%(a)s, 'Cave')",),
        # an update that bumps updated_at, and one that forgets it
        (
            "UPDATE clients SET nom = nom || ' (vu)', updated_at = now() WHERE id IN "
            "(SELECT id FROM clients WHERE etablissement_id = %(a)s ORDER BY id LIMIT 2)",
            "UPDATE clients SET notes = 'forgot updated_at' WHERE id IN "
            "(SELECT id FROM clients WHERE etablissement_id = %(a)s ORDER BY id DESC LIMIT 3)",
            "UPDATE produits SET prix_vente = prix_vente * 2 WHERE id IN "
            "(SELECT id FROM produits WHERE etablissement_id = %(a)s ORDER BY id LIMIT 3)",
        ),
        # deletes (ON DELETE CASCADE takes the sales' lines and payments along)
        ("DELETE FROM ventes WHERE id IN (SELECT id FROM ventes WHERE etablissement_id = %(a)s ORDER BY id LIMIT 4)",),
        # a row deleted and inserted again with the same key and other values
        (
            "CREATE TEMP TABLE gone AS SELECT * FROM zones WHERE etablissement_id = %(a)s AND nom = 'Cave'",
            "DELETE FROM zones WHERE id IN (SELECT id FROM gone)",
            "INSERT INTO zones SELECT id, etablissement_id, 'Cave voûtée' FROM gone",
        ),
        # rows that move into the tenant without being written: their sale moves
        (
            "UPDATE ventes SET etablissement_id = %(a)s WHERE id = (SELECT id FROM ventes WHERE etablissement_id = "
            "%(b)s ORDER BY id LIMIT 1)",
        ),
    ]
    links = [base]
    for statements in steps:
        _run(pos, *statements, a=a, b=b)
        result = _backup(env, a)
        assert result.parent_id == links[-1].backup_id
        links.append(result)
        states[result.backup_id] = state_of(pos.url, "pos", a)
    # the restore of the base is a change too: a row changed by a restore is caught like any other
    before_restore = state_of(pos.url, "pos", a)
    _restore(base.backup_id)
    restored = _backup(env, a)
    assert restored.parent_id == links[-1].backup_id
    links.append(restored)
    states[restored.backup_id] = state_of(pos.url, "pos", a)
    assert states[restored.backup_id] != before_restore
    # every incremental holds its changes only, and names its parent and its chain's base
    for parent, link in itertools.pairwise(links):
        manifest = _manifest(env, link)
        assert manifest["kind"] == "incremental" and manifest["version"].startswith("2.")
        assert manifest["parent_id"] == parent.backup_id and manifest["base_id"] == base.backup_id
        assert link.record_count < base.record_count / 4
    assert _manifest(env, links[1])["tables"]["zones"]["rows"] == 2
    assert _manifest(env, links[5])["tables"]["lignes_vente"]["rows"] > 0  # moved in with their sale
    # restoring any link gives the tenant's rows as they were at that link, byte for byte
    for link in (links[3], links[5], restored):
        _run(
            pos,
            "DELETE FROM clients WHERE etablissement_id = %(a)s AND id NOT IN (SELECT client_id FROM ventes "
            "WHERE client_id IS NOT NULL)",
            "UPDATE produits SET nom = 'x' WHERE etablissement_id = %(a)s",
            a=a,
        )
        _restore(link.backup_id)
        assert state_of(pos.url, "pos", a) == states[link.backup_id], link.backup_id


def test_a_table_without_a_key_is_copied_whole_in_each_incremental(
    env: dict[str, Any], pg_server: str, tmp_path: Path
) -> None:
    db = make_database(pg_server)
    try:
        _run(
            db,
            "CREATE TABLE items (id int PRIMARY KEY, shop text NOT NULL, label text)",
            "CREATE TABLE notes (shop text NOT NULL, body text)",  # no key: rows are compared as rows
            "CREATE TABLE tags (id int PRIMARY KEY, shop text NOT NULL)",
            "INSERT INTO tags VALUES (1, 's1'), (2, 's1'), (3, 's2')",
            "INSERT INTO items SELECT i, 's1', 'item ' || i FROM generate_series(1, 50) i",
            "INSERT INTO notes SELECT 's1', 'note ' || (i % 5) FROM generate_series(1, 20) i",
        )
        env["use"](db)
        request = {"tenant_column": "shop", "force": True, "kind": "incremental"}
        run = local_runner()
        _settle(db.url)
        base = backup_tenant(run, BackupRequest(tenant_id="s1", **request), None, None)
        _run(
            db,
            "UPDATE items SET label = 'changed' WHERE id = 7",
            "DELETE FROM items WHERE id = 9",
            "DELETE FROM notes WHERE ctid = (SELECT min(ctid) FROM notes)",
            "INSERT INTO notes VALUES ('s1', 'new')",
            "DELETE FROM tags WHERE shop = 's1'",  # every key of their buckets gone
        )
        _settle(db.url)
        inc = backup_tenant(run, BackupRequest(tenant_id="s1", **request), None, None)
        tables = _manifest(env, inc)["tables"]
        assert tables["items"]["content"] == "changes" and tables["items"]["rows"] == 1
        assert tables["items"]["state_rows"] == 49
        assert tables["notes"]["content"] == "rows" and tables["notes"]["rows"] == 20
        assert tables["tags"]["rows"] == 0 and tables["tags"]["state_rows"] == 0
        expected = state_of(db.url, _profile("shop"), "s1")
        _run(db, "DELETE FROM notes", "UPDATE items SET label = NULL", "INSERT INTO tags VALUES (1, 's1'), (4, 's1')")
        req = RestoreRequest(backup_id=inc.backup_id, confirm="RESTORE")
        restore_backup(run, req, ApprovalRequest(), None, None)
        assert state_of(db.url, _profile("shop"), "s1") == expected
        assert base.parent_id is None
    finally:
        drop_database(db)


def _profile(column: str) -> Any:
    from tenant_backup.tenancy.profiles import discovered_profile

    return discovered_profile(column)


@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_an_incremental_in_a_format_that_cannot_carry_one_is_refused_before_any_work(
    env: dict[str, Any], pos_db: DemoDatabase, fmt: str
) -> None:
    env["use"](pos_db)
    with pytest.raises(ConfigurationError, match=rf"incremental backup cannot be a {fmt} artifact.*--format csv"):
        _backup(env, pos_db.tenants[0].id, format=fmt)


def test_a_schema_change_or_a_full_backup_in_between_starts_a_new_chain(env: dict[str, Any], pos: DemoDatabase) -> None:
    env["use"](pos)
    a = pos.tenants[0].id
    first = _backup(env, a)
    _run(pos, "ALTER TABLE zones ADD COLUMN couleur text DEFAULT 'bleu'")  # no row is rewritten
    after_alter = _backup(env, a)
    assert after_alter.parent_id is None and "differs in schema" in (after_alter.chain_note or "")
    assert _backup(env, a).parent_id == after_alter.backup_id
    _backup(env, a, kind="full")
    after_full = _backup(env, a)
    assert after_full.parent_id is None and "not part of a chain" in (after_full.chain_note or "")
    assert first.parent_id is None


def test_verify_checks_the_whole_chain_and_a_damaged_parent_fails_it(env: dict[str, Any], pos: DemoDatabase) -> None:
    env["use"](pos)
    a = pos.tenants[0].id
    base = _backup(env, a)
    _run(pos, "UPDATE clients SET nom = 'x' WHERE etablissement_id = %(a)s", a=a)
    inc = _backup(env, a)
    result = verify_backup(local_runner(), inc.backup_id, None, None)
    assert result.status == "verified" and result.tables["clients"].rows > 0
    storage = Storage(env["store"])
    damaged = Path(storage.path(storage.key_of(base.storage_path)))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=f"backup {base.backup_id}"):
        verify_backup(local_runner(), inc.backup_id, None, None)


def test_a_parent_cannot_be_deleted_while_its_incremental_stays_and_a_file_restore_is_refused(
    env: dict[str, Any], pos: DemoDatabase, tmp_path: Path
) -> None:
    from tenant_backup.operations.maintenance import delete_backup
    from tenant_backup.settings import get_settings

    env["use"](pos)
    a = pos.tenants[0].id
    base = _backup(env, a)
    inc = _backup(env, a)
    with pytest.raises(LedgerError, match=f"parent of incremental backup.*{inc.backup_id}"):
        delete_backup(pos.url, get_settings(), Storage(env["store"]), base.backup_id, confirm="DELETE")
    storage = Storage(env["store"])
    assert storage.exists(storage.key_of(base.storage_path))
    local = tmp_path / "inc.zip"
    local.write_bytes(Path(storage.path(storage.key_of(inc.storage_path))).read_bytes())
    with pytest.raises(ConfigurationError, match="needs its whole chain"):
        _restore_file(str(local))


def _restore_file(path: str) -> None:
    req = RestoreRequest(file=path, confirm="RESTORE")
    restore_backup(local_runner(), req, ApprovalRequest(), None, None)


def _row(n: int, parent: int | None, kind: str = "incremental", days: float = 0) -> BackupRow:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return BackupRow(
        id=str(uuid.UUID(int=n)),
        tenant_id="t",
        tenant_column="shop",
        nom=f"backup {n}",
        type=kind,
        format="csv",
        status="completed",
        backup_type="scheduled",
        created_at=now - timedelta(days=days),
        parent_id=str(uuid.UUID(int=parent)) if parent is not None else None,
        metadata={"scope_type": "full"},
    )


def test_retention_keeps_every_backup_a_kept_incremental_needs() -> None:
    # two chains: 1 <- 2 <- 3 (old) and 4 <- 5 <- 6 (new); keep the newest two backups
    rows = [
        _row(1, None, "full", days=20),
        _row(2, 1, days=19),
        _row(3, 2, days=18),
        _row(4, None, "full", days=3),
        _row(5, 4, days=2),
        _row(6, 5, days=1),
    ]
    decisions = {
        int(uuid.UUID(d.backup_id)): d
        for d in decide(rows, RetentionPolicy(max_backups=2), {}, rows[0].created_at + timedelta(days=20))
    }
    assert [n for n, d in sorted(decisions.items()) if d.keep] == [4, 5, 6]
    assert "needed by incremental" in decisions[4].reason
    assert not any(decisions[n].keep for n in (1, 2, 3))


@pytest.mark.usefixtures("prefect_api")
def test_the_backup_flow_takes_an_incremental_and_the_restore_flow_restores_its_chain(
    env: dict[str, Any], pos: DemoDatabase
) -> None:
    from flows.backup import backup_tenant as backup_flow
    from flows.restore import restore_backup as restore_flow

    env["use"](pos)
    a = pos.tenants[0].id
    base = backup_flow(tenant_id=a, kind="incremental", force=True)
    _run(pos, "DELETE FROM ventes WHERE id IN (SELECT id FROM ventes WHERE etablissement_id = %(a)s LIMIT 3)", a=a)
    inc = backup_flow(tenant_id=a, kind="incremental", force=True)
    assert inc.parent_id == base.backup_id and base.chain_note
    expected = state_of(pos.url, "pos", a)
    _run(pos, "DELETE FROM paiements WHERE vente_id IN (SELECT id FROM ventes WHERE etablissement_id = %(a)s)", a=a)
    result = restore_flow(backup_id=uuid.UUID(inc.backup_id), confirm="RESTORE")
    assert result.tables["paiements"].inserted > 0 and result.tables["ventes"].deleted == 0
    assert state_of(pos.url, "pos", a) == expected


def test_a_row_written_in_a_savepoint_of_a_transaction_open_at_the_parents_snapshot_is_caught(
    env: dict[str, Any], pos: DemoDatabase
) -> None:
    env["use"](pos)
    a = pos.tenants[0].id
    with pos.connect() as writer:
        writer.execute("BEGIN")
        writer.execute("SELECT 1 FROM zones LIMIT 1 FOR UPDATE")  # the transaction has an id of its own
        writer.execute("SAVEPOINT s")  # the row's xmin is the savepoint's id, which no snapshot lists
        writer.execute("INSERT INTO zones (etablissement_id, nom) VALUES (%s, 'dans un savepoint')", (a,))
        writer.execute("RELEASE SAVEPOINT s")
        base = _backup(env, a, settle=False)  # the transaction is still open: the base cannot see the row
        writer.execute("COMMIT")
    inc = _backup(env, a)
    assert inc.parent_id == base.backup_id and inc.tables["zones"] >= 1
    expected = state_of(pos.url, "pos", a)
    _run(pos, "DELETE FROM zones WHERE nom = 'dans un savepoint'")
    _restore(inc.backup_id)
    assert state_of(pos.url, "pos", a) == expected


def test_erasing_a_tenant_takes_its_chains_whole(env: dict[str, Any], pos: DemoDatabase) -> None:
    from tenant_backup.operations.erasure import erase_tenant
    from tenant_backup.settings import get_settings

    env["use"](pos)
    a = pos.tenants[0].id
    chain = [_backup(env, a) for _ in range(3)]
    assert chain[2].parent_id == chain[1].backup_id
    report = erase_tenant(pos.url, get_settings(), Storage(env["store"]), a, confirm="ERASE")
    assert sorted(report.deleted_backups) == sorted(b.backup_id for b in chain) and not report.errors
    with pos.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tenant_backup.backup_key_digests").fetchone() == (0,)


def test_an_incremental_planned_before_another_backup_completed_is_refused_under_the_lock(
    env: dict[str, Any], pos: DemoDatabase
) -> None:
    from tenant_backup.backup.steps import plan_backup
    from tenant_backup.settings import get_settings

    env["use"](pos)
    a = pos.tenants[0].id
    base = _backup(env, a)
    request = BackupRequest(tenant_id=a, profile="pos", force=True, kind="incremental")
    plan = plan_backup(pos.url, get_settings(), request)
    assert plan.chain is not None and plan.chain.parent is not None and plan.chain.parent.backup_id == base.backup_id
    meanwhile = _backup(env, a)  # completes between the plan and the lock: it takes the parent's digests
    with pytest.raises(LedgerError, match=f"{meanwhile.backup_id} .* completed after this incremental was planned"):
        backup_tenant(local_runner(), plan.request, None, None, plan=plan)
    assert _backup(env, a).parent_id == meanwhile.backup_id


_SCHEMA = [
    "CREATE TABLE accounts (id int PRIMARY KEY, name text)",
    "INSERT INTO accounts VALUES (1, 'one'), (2, 'two')",
    "CREATE SCHEMA prep",
]
# Changes that alter what rows hold, or which rows are there, without writing a row (no xmin
# tells) and without changing a column's name or type: each must start a new chain.
_UNWRITTEN = {
    "a partition swapped for another": (
        [
            "CREATE TABLE ev (id int, account_id int NOT NULL REFERENCES accounts, at date NOT NULL, v text, "
            "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
            "CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
            "INSERT INTO ev SELECT i, 1 + i % 2, '2024-01-01'::date + i, 'orig' FROM generate_series(1, 6) i",
            "CREATE TABLE prep.ev_new (LIKE ev INCLUDING ALL)",
            "INSERT INTO prep.ev_new SELECT id, account_id, at, 'replaced' FROM ev",
        ],
        [
            "ALTER TABLE ev DETACH PARTITION ev_2024",
            "ALTER TABLE ev ATTACH PARTITION prep.ev_new FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        ],
    ),
    "a partition with rows attached": (
        [
            "CREATE TABLE ev (id int, account_id int NOT NULL REFERENCES accounts, at date NOT NULL, "
            "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
            "CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
            "INSERT INTO ev VALUES (1, 1, '2024-02-02')",
            "CREATE TABLE prep.ev_2023 (LIKE ev INCLUDING ALL)",
            "INSERT INTO prep.ev_2023 VALUES (100, 1, '2023-05-05')",
        ],
        ["ALTER TABLE ev ATTACH PARTITION prep.ev_2023 FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')"],
    ),
    "an inheritance child with rows added": (
        [
            "CREATE TABLE notes (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, body text)",
            "INSERT INTO notes VALUES (1, 1, 'a')",
            "CREATE TABLE prep.more_notes (id int PRIMARY KEY, account_id int NOT NULL, body text)",
            "INSERT INTO prep.more_notes VALUES (2, 1, 'b')",
        ],
        ["ALTER TABLE prep.more_notes INHERIT notes"],
    ),
    "a table swapped for one prepared earlier": (
        [
            "CREATE TABLE prices (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, amount numeric)",
            "INSERT INTO prices VALUES (1, 1, 10), (2, 1, 20), (3, 2, 30)",
            "CREATE TABLE prep.prices (LIKE prices INCLUDING ALL)",
            "INSERT INTO prep.prices SELECT id, account_id, amount * 2 FROM prices",
        ],
        [
            "DROP TABLE prices",
            "ALTER TABLE prep.prices SET SCHEMA public",
            "ALTER TABLE prices ADD FOREIGN KEY (account_id) REFERENCES accounts",
        ],
    ),
    "a column dropped and added again": (
        [
            "CREATE TABLE items (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, flag boolean "
            "DEFAULT false)",
            "INSERT INTO items VALUES (1, 1, true), (2, 1, true), (3, 2, true)",
        ],
        ["ALTER TABLE items DROP COLUMN flag", "ALTER TABLE items ADD COLUMN flag boolean DEFAULT false"],
    ),
    "enum labels renamed": (
        [
            "CREATE TYPE prio AS ENUM ('low', 'high')",
            "CREATE TABLE items (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, p prio)",
            "INSERT INTO items VALUES (1, 1, 'low'), (2, 1, 'high'), (3, 2, 'low')",
        ],
        [
            "ALTER TYPE prio RENAME VALUE 'low' TO 'tmp'",
            "ALTER TYPE prio RENAME VALUE 'high' TO 'low'",
            "ALTER TYPE prio RENAME VALUE 'tmp' TO 'high'",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(_UNWRITTEN))
def test_a_change_of_the_tables_that_writes_no_row_starts_a_new_chain_and_restores_exactly(
    env: dict[str, Any], pg_server: str, case: str
) -> None:
    setup, change = _UNWRITTEN[case]
    db = make_database(pg_server)
    try:
        _run(db, *_SCHEMA, *setup)
        env["use"](db)
        run = local_runner()
        request = BackupRequest(tenant_id="1", tenant_column="account_id", force=True, kind="incremental")
        backup_tenant(run, request, None, None)
        _run(db, *change)
        after = backup_tenant(run, request, None, None)
        assert after.parent_id is None and "differs in" in (after.chain_note or ""), after.chain_note
        expected = state_of(db.url, _profile("account_id"), "1")
        _run(db, "UPDATE accounts SET name = 'damaged'")
        restore_backup(run, RestoreRequest(backup_id=after.backup_id, confirm="RESTORE"), ApprovalRequest(), None, None)
        assert state_of(db.url, _profile("account_id"), "1") == expected
    finally:
        drop_database(db)


def test_a_chain_with_a_link_gone_from_storage_is_refused_naming_it(env: dict[str, Any], pos: DemoDatabase) -> None:
    env["use"](pos)
    a = pos.tenants[0].id
    base = _backup(env, a)
    inc = _backup(env, a)
    storage = Storage(env["store"])
    storage.remove(storage.key_of(base.storage_path))
    with pytest.raises(VerificationError, match=f"needs backup {base.backup_id} of its chain \\(link 1 of 2\\)"):
        verify_backup(local_runner(), inc.backup_id, None, None)


def test_rows_two_hops_from_the_tenant_column_are_caught_when_any_row_on_their_path_was_written(
    env: dict[str, Any], pg_server: str
) -> None:
    """lines -> orders -> accounts(shop), orders keyed by two columns: an account moved to the
    tenant brings its orders and lines without writing them, an order moved brings its lines; the
    incremental holds exactly those and the written rows, and its chain restores the tenant."""
    db = make_database(pg_server)
    try:
        _run(
            db,
            "CREATE TABLE accounts (id int PRIMARY KEY, shop text NOT NULL)",
            "CREATE TABLE orders (account_id int NOT NULL REFERENCES accounts, n int, note text, "
            "PRIMARY KEY (account_id, n))",
            "CREATE TABLE lines (id int PRIMARY KEY, account_id int NOT NULL, n int NOT NULL, qty int, "
            "FOREIGN KEY (account_id, n) REFERENCES orders ON UPDATE CASCADE)",
            "INSERT INTO accounts SELECT a, CASE WHEN a <= 3 THEN 's1' ELSE 's2' END FROM generate_series(1, 6) a",
            "INSERT INTO orders SELECT a, n, 'o' FROM generate_series(1, 6) a, generate_series(1, 4) n",
            "INSERT INTO lines SELECT row_number() OVER (), a, n, 1 FROM generate_series(1, 6) a, "
            "generate_series(1, 4) n, generate_series(1, 5) k",
        )
        env["use"](db)
        request = {"tenant_column": "shop", "force": True, "kind": "incremental"}
        run = local_runner()
        _settle(db.url)
        backup_tenant(run, BackupRequest(tenant_id="s1", **request), None, None)
        _run(
            db,
            "UPDATE accounts SET shop = 's1' WHERE id = 4",  # brings 4 orders and their 20 lines, unwritten
            "UPDATE lines SET qty = 2 WHERE id = 1",  # written
            "UPDATE orders SET note = 'x' WHERE account_id = 2 AND n = 1",  # its 5 lines come along
            "DELETE FROM lines WHERE id = 30",
        )
        _settle(db.url)
        inc = backup_tenant(run, BackupRequest(tenant_id="s1", **request), None, None)
        assert inc.parent_id is not None, inc.chain_note
        tables = _manifest(env, inc)["tables"]
        assert tables["accounts"]["rows"] == 1 and tables["orders"]["rows"] == 5
        assert tables["lines"]["rows"] == 20 + 1 + 5 and tables["lines"]["state_rows"] == 60 + 20 - 1
        expected = state_of(db.url, _profile("shop"), "s1")
        _run(db, "UPDATE lines SET qty = 0", "UPDATE orders SET note = NULL")
        restore_backup(run, RestoreRequest(backup_id=inc.backup_id, confirm="RESTORE"), ApprovalRequest(), None, None)
        assert state_of(db.url, _profile("shop"), "s1") == expected
    finally:
        drop_database(db)


def test_the_changed_rows_of_a_table_reached_through_its_parent_are_never_a_subplan_run_per_row(
    pg_server: str,
) -> None:
    """Under an OR, a subquery is a SubPlan, run once per row when its estimate (a third of the
    parent's rows) outgrows work_mem: a 3 M-row tenant's incremental took 255 s. The changed
    rows' query has no SubPlan, whatever work_mem."""
    from psycopg import ClientCursor

    from tenant_backup.backup.changes import changed_filter
    from tenant_backup.tenancy.filters import select_tenant_rows
    from tests.helpers import scopes

    db = make_database(pg_server)
    try:
        _run(
            db,
            "CREATE TABLE accounts (id int PRIMARY KEY, shop text NOT NULL)",
            "CREATE TABLE orders (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts)",
            "CREATE TABLE lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders)",
            "INSERT INTO accounts SELECT a, 's' || a % 3 FROM generate_series(1, 3000) a",
            "INSERT INTO orders SELECT o, 1 + o % 3000 FROM generate_series(1, 30000) o",
            "INSERT INTO lines SELECT l, 1 + l % 30000 FROM generate_series(1, 60000) l",
            "ANALYZE",
        )
        with db.connect() as conn:
            conn.execute("SET work_mem = '64kB'")
            for table in ("orders", "lines"):
                scope = scopes(conn, _profile("shop"))[table]
                query = ClientCursor(conn).mogrify(
                    select_tenant_rows(scope, changed_filter(scope)), {"tenant": "s1", "chain_xmin": "3"}
                )
                plan = "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN {query}"))
                assert "SubPlan" not in plan, plan
    finally:
        drop_database(db)


def test_a_parent_key_changed_with_on_update_cascade_since_the_backup_is_refused_with_what_to_do(
    env: dict[str, Any], pg_server: str
) -> None:
    """The restore writes the parent's old key back without firing ON UPDATE CASCADE, so the
    children that followed the new key reach no tenant: refused, nothing changed, and the message
    says to set the key back; done, the restore completes. (Found by a stranger's schema.)"""
    db = make_database(pg_server)
    try:
        _run(
            db,
            "CREATE TABLE org (id int PRIMARY KEY, shop text NOT NULL, code text UNIQUE NOT NULL)",
            "CREATE TABLE proj (id int PRIMARY KEY, org_code text NOT NULL REFERENCES org (code) ON UPDATE CASCADE)",
            "INSERT INTO org VALUES (1, 's1', 'c1'), (2, 's2', 'c2')",
            "INSERT INTO proj SELECT p, 'c' || (1 + p % 2) FROM generate_series(1, 10) p",
        )
        env["use"](db)
        run = local_runner()
        full = backup_tenant(run, BackupRequest(tenant_id="s1", tenant_column="shop", force=True), None, None)
        expected = state_of(db.url, _profile("shop"), "s1")
        _run(db, "UPDATE org SET code = 'c1-new' WHERE id = 1", "DELETE FROM proj WHERE id = 2")
        changed = state_of(db.url, _profile("shop"), "s1")
        with pytest.raises(
            (RestoreCheckError, RestoreRefusedError), match="of a row of another tenant or of none .*set that key back"
        ) as refused:
            _restore(full.backup_id)
        assert "nothing" in str(refused.value) and state_of(db.url, _profile("shop"), "s1") == changed
        _run(db, "UPDATE org SET code = 'c1' WHERE id = 1")  # as the message says
        _restore(full.backup_id)
        assert state_of(db.url, _profile("shop"), "s1") == expected
    finally:
        drop_database(db)
