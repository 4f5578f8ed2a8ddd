"""A schema written outside this project: tables without a primary key (one with duplicate rows,
one keyed only by a unique index), a partitioned table, a table in another schema, a foreign key
to Supabase-style ``auth.users`` outside the backup, a tenant column reached only through a
composite foreign key, a self-reference, identity and serial columns and a generated column."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import RestoreRefusedError
from tenant_backup.storage import Storage
from tenant_backup.tenancy.catalog import read_catalog
from tenant_backup.tenancy.filters import tenant_filter
from tenant_backup.tenancy.fk_order import restore_order
from tenant_backup.tenancy.profiles import discovered_profile, load_profile
from tenant_backup.tenancy.scope import plan_scope
from tests.conftest import Database, drop_database, make_database
from tests.helpers import state_of

pytestmark = pytest.mark.usefixtures("prefect_api")

SCHEMA = """
CREATE SCHEMA auth;
CREATE TABLE auth.users (id uuid PRIMARY KEY, email text NOT NULL);
CREATE SCHEMA billing;
CREATE TABLE shops (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (
  id serial PRIMARY KEY,
  shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE,
  user_id uuid REFERENCES auth.users,
  nick text,
  mentor_id integer REFERENCES members
);
-- No key at all, duplicate rows, a json column (no equality operator).
CREATE TABLE tags (shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE, label text NOT NULL,
                   weight integer, meta json);
-- No primary key, but a unique index of NOT NULL columns.
CREATE TABLE settings (shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE, code text NOT NULL,
                       value text, UNIQUE (shop_id, code));
CREATE TABLE events (shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE, at timestamptz NOT NULL,
                     kind text NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY,
  shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE,
  total numeric(10,2) NOT NULL,
  total_ttc numeric GENERATED ALWAYS AS (total * 1.2) STORED,
  PRIMARY KEY (id, shop_id)
);
-- No tenant column: its tenant is found through a composite foreign key.
CREATE TABLE order_lines (
  order_id bigint NOT NULL, order_shop integer NOT NULL, line integer NOT NULL, qty integer NOT NULL,
  PRIMARY KEY (order_id, order_shop, line),
  FOREIGN KEY (order_id, order_shop) REFERENCES orders (id, shop_id) ON DELETE CASCADE
);
CREATE TABLE billing.invoices (id serial PRIMARY KEY, shop_id integer NOT NULL REFERENCES shops ON DELETE CASCADE,
                               amount numeric(10,2));
"""

PROFILE = """
name = "wild"
schema = "public"
tenant_column = "shop_id"

[tenant_table]
name = "shops"
key = "id"
display_name = "name"

[categories]
shop = ["shops"]
people = ["members"]
catalog = ["tags", "settings"]
activity = ["events", "orders", "order_lines", "billing.invoices"]
"""


def _load(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)
    for shop in (1, 2, 3):
        conn.execute("INSERT INTO shops VALUES (%s, %s)", (shop, f"Shop {shop}"))
        users = [uuid.uuid5(uuid.NAMESPACE_OID, f"{shop}-{i}") for i in range(4)]
        for i, user in enumerate(users):
            conn.execute("INSERT INTO auth.users VALUES (%s, %s)", (user, f"u{i}@shop{shop}"))
            conn.execute(
                "INSERT INTO members (shop_id, user_id, nick, mentor_id) "
                "VALUES (%s, %s, %s, (SELECT max(id) FROM members WHERE shop_id = %s))",
                (shop, user, f'nick, "{i}"\n', shop),
            )
        for label, weight, meta in [
            ("a", 1, '{ "x" : 1 }'),
            ("a", 1, '{ "x" : 1 }'),
            ("b", 2, None),
            ("c", None, "[]"),
        ]:
            conn.execute("INSERT INTO tags VALUES (%s, %s, %s, %s)", (shop, label, weight, meta))
        for code in ("lang", "tz", "vat"):
            conn.execute("INSERT INTO settings VALUES (%s, %s, %s)", (shop, code, f"{code}-{shop}"))
        for day in ("2025-03-01", "2025-12-31 23:59", "2026-01-01", "2026-06-15"):
            conn.execute("INSERT INTO events VALUES (%s, %s, 'visit', %s)", (shop, day, '{"n": 1}'))
        for total in ("10.50", "99.99", "0.01"):
            order = conn.execute(
                "INSERT INTO orders (shop_id, total) VALUES (%s, %s) RETURNING id", (shop, total)
            ).fetchone()
            assert order is not None
            for line in (1, 2):
                conn.execute("INSERT INTO order_lines VALUES (%s, %s, %s, %s)", (order[0], shop, line, line * 3))
            conn.execute("INSERT INTO billing.invoices (shop_id, amount) VALUES (%s, %s)", (shop, total))


@pytest.fixture(scope="module")
def wild(pg_server: str) -> Iterator[Database]:
    db = make_database(pg_server)
    try:
        with db.connect() as conn:
            _load(conn)
        yield db
    finally:
        drop_database(db)


@pytest.fixture
def profile_file(tmp_path: Path) -> str:
    path = tmp_path / "wild.toml"
    path.write_text(PROFILE, encoding="utf-8")
    return str(path)


def _wipe(db: Database, profile_path: str, tenant: str) -> None:
    """Delete every row of the tenant, children first, its shops row included."""
    profile = load_profile(profile_path)
    with db.connect() as conn, conn.transaction():
        catalog = read_catalog(conn, profile.db_schema, profile.schemas)
        scopes = {s.table: s for s in plan_scope(catalog, profile, profile.tables_for(None))}
        for table in reversed(restore_order(sorted(scopes), catalog.foreign_keys).tables):
            scope = scopes[table]
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {}").format(scope.ident(), tenant_filter(scope)), {"tenant": tenant}
            )


def _use(env: dict[str, Any], db: Database) -> None:
    env["use"](db)


@pytest.mark.parametrize("fmt", ["csv", "json", "sql"])
def test_a_schema_from_the_wild_round_trips_byte_identical_in_every_format(
    fmt: str, wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    before = state_of(wild.url, load_profile(profile_file), "1")
    others = state_of(wild.url, load_profile(profile_file), "2")
    assert before["tags"].count(b"\n") == 4 and before["events"].count(b"\n") == 4
    backup = backup_tenant(tenant_id="1", profile=profile_file, format=fmt, force=True)  # type: ignore[arg-type]
    assert backup.tables == {
        "shops": 1,
        "members": 4,
        "tags": 4,
        "settings": 3,
        "events": 4,
        "orders": 3,
        "order_lines": 6,
        "billing.invoices": 3,
    }
    _wipe(wild, profile_file, "1")
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert result.tables["tags"].inserted == 4
    assert state_of(wild.url, load_profile(profile_file), "1") == before
    assert state_of(wild.url, load_profile(profile_file), "2") == others
    with wild.connect() as conn:  # identity and serial sequences were moved past the restored ids
        conn.execute("INSERT INTO orders (shop_id, total) VALUES (1, 1)")
        conn.execute("INSERT INTO billing.invoices (shop_id, amount) VALUES (1, 1)")
        conn.execute("INSERT INTO members (shop_id, nick) VALUES (1, 'new')")
        conn.execute("DELETE FROM orders WHERE shop_id = 1 AND total = 1")
        conn.execute("DELETE FROM billing.invoices WHERE shop_id = 1 AND amount = 1")
        conn.execute("DELETE FROM members WHERE nick = 'new'")


def test_rows_of_a_table_without_a_key_are_restored_as_a_multiset_touching_only_the_difference(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    profile = load_profile(profile_file)
    before = state_of(wild.url, profile, "2")
    backup = backup_tenant(tenant_id="2", profile=profile_file, categories=["catalog"], force=True)
    with wild.connect() as conn:
        conn.execute("DELETE FROM tags WHERE ctid = (SELECT min(ctid) FROM tags WHERE shop_id = 2 AND label = 'a')")
        conn.execute("INSERT INTO tags VALUES (2, 'b', 2, NULL), (2, 'b', 2, NULL), (2, 'd', 4, '{}')")
        untouched = conn.execute("SELECT ctid::text, xmin::text FROM tags WHERE shop_id = 2 AND label = 'c'").fetchone()
    merge = restore_backup(backup_id=uuid.UUID(backup.backup_id), mode="merge", dry_run=True)
    assert (merge.tables["tags"].inserted, merge.tables["tags"].deleted) == (1, 0)
    plan = restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
    tags = plan.tables["tags"]
    assert (tags.rows, tags.inserted, tags.updated, tags.deleted) == (4, 1, 0, 3)
    assert tags.matched_by == "rows" and plan.tables["settings"].matched_by == "key (shop_id, code)"
    done = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert (done.tables["tags"].inserted, done.tables["tags"].deleted) == (1, 3)
    after = state_of(wild.url, profile, "2")
    assert after["tags"] == before["tags"] and after["settings"] == before["settings"]
    with wild.connect() as conn:
        still = conn.execute("SELECT ctid::text, xmin::text FROM tags WHERE shop_id = 2 AND label = 'c'").fetchone()
    assert still == untouched  # an unchanged row is not rewritten


def test_a_unique_index_of_not_null_columns_is_the_key_of_a_table_without_primary_key(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    before = state_of(wild.url, load_profile(profile_file), "3")
    backup = backup_tenant(tenant_id="3", profile=profile_file, categories=["catalog"], force=True)
    with wild.connect() as conn:
        conn.execute("UPDATE settings SET value = 'changed' WHERE shop_id = 3 AND code = 'tz'")
    result = restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    settings = result.tables["settings"]
    assert (settings.inserted, settings.updated, settings.deleted) == (0, 1, 0)
    assert state_of(wild.url, load_profile(profile_file), "3") == before


def test_a_partitioned_table_is_backed_up_once_through_its_parent(wild: Database, env: dict[str, Any]) -> None:
    _use(env, wild)
    with wild.connect() as conn:
        profile = discovered_profile("shop_id")
        discovered = {s.table for s in plan_scope(read_catalog(conn, "public"), profile, None)}
    assert "events" in discovered and not {"events_2025", "events_2026"} & discovered
    backup = backup_tenant(tenant_id="3", profile=None, tenant_column="shop_id", force=True)
    assert backup.tables["events"] == 4 and "events_2025" not in backup.tables


def test_the_tenant_column_is_reached_through_a_composite_foreign_key(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    profile = load_profile(profile_file)
    with wild.connect() as conn:
        scope = {s.table: s for s in plan_scope(read_catalog(conn, "public", profile.schemas), profile, None)}
        lines = scope["order_lines"]
        assert lines.describe() == "order_lines.order_id,order_shop -> orders.shop_id"
        query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE order_shop <> 2) FROM order_lines WHERE {}").format(
            tenant_filter(lines)
        )
        found = conn.execute(query, {"tenant": "2"}).fetchone()
    assert found == (6, 0)


def test_a_reference_to_a_row_outside_the_backup_is_named_before_anything_is_written(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    backup = backup_tenant(tenant_id="3", profile=profile_file, categories=["people"], force=True)
    with wild.connect() as conn:  # the app deletes a member, then its auth user
        user = conn.execute("SELECT user_id FROM members WHERE shop_id = 3 AND mentor_id IS NOT NULL LIMIT 1")
        user_id = user.fetchone()[0]  # type: ignore[index]
        conn.execute(
            "UPDATE members SET mentor_id = NULL WHERE mentor_id = (SELECT id FROM members WHERE user_id = %s)",
            (user_id,),
        )
        conn.execute("DELETE FROM members WHERE user_id = %s", (user_id,))
        conn.execute("DELETE FROM auth.users WHERE id = %s", (user_id,))
    changed = state_of(wild.url, load_profile(profile_file), "3")
    plan = restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
    assert [(m["table"], m["references"], m["rows"]) for m in plan.missing_references] == [("members", "auth.users", 1)]
    assert str(user_id) in plan.missing_references[0]["examples"][0]  # type: ignore[index]
    with pytest.raises(RestoreRefusedError, match=r"members via members_user_id_fkey -> auth\.users"):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    assert state_of(wild.url, load_profile(profile_file), "3") == changed


def test_the_sql_artifact_of_the_wild_schema_replays_with_psql(
    wild: Database, env: dict[str, Any], profile_file: str, tmp_path: Path
) -> None:
    _use(env, wild)
    profile = load_profile(profile_file)
    before = state_of(wild.url, profile, "2")
    backup = backup_tenant(tenant_id="2", profile=profile_file, format="sql", compression="none", force=True)
    script = tmp_path / "backup.sql"
    storage = Storage(env["store"])
    script.write_bytes(storage.open_read(storage.key_of(backup.storage_path)).read())
    with wild.connect() as conn:  # duplicates gone and added, a keyed change, a partition's row gone
        conn.execute("DELETE FROM tags WHERE shop_id = 2 AND label = 'a'")
        conn.execute("INSERT INTO tags VALUES (2, 'c', NULL, '[]')")
        conn.execute("UPDATE settings SET value = 'x' WHERE shop_id = 2")
        conn.execute("DELETE FROM events WHERE shop_id = 2 AND at >= '2026-01-01'")
    done = subprocess.run(
        ["psql", "-X", "-q", "--single-transaction", "-f", str(script), wild.url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert state_of(wild.url, profile, "2") == before


def test_app_triggers_that_name_tables_without_a_schema_see_the_app_tables_not_the_staging_ones(
    wild: Database, env: dict[str, Any], profile_file: str, tmp_path: Path
) -> None:
    """A trigger of the app that writes another restored table, naming it without a schema, must
    write the real table (whose rows the restore then puts back), never a staging copy: that would
    let rows that differ from the backup through as "completed"."""
    _use(env, wild)
    profile = load_profile(profile_file)
    before = state_of(wild.url, profile, "1")
    backup = backup_tenant(tenant_id="1", profile=profile_file, categories=["activity"], force=True)
    sql_backup = backup_tenant(tenant_id="1", profile=profile_file, categories=["activity"], format="sql",
                               compression="none", force=True)  # fmt: skip
    storage = Storage(env["store"])
    script = tmp_path / "backup.sql"
    script.write_bytes(storage.open_read(storage.key_of(sql_backup.storage_path)).read())
    with wild.connect() as conn:
        conn.execute(
            "CREATE FUNCTION tb_touch_lines() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "UPDATE order_lines SET qty = qty + 100 WHERE order_id = NEW.id AND order_shop = NEW.shop_id; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER tb_touch_lines AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION tb_touch_lines()"
        )
        conn.execute("ALTER TABLE orders ENABLE ALWAYS TRIGGER tb_touch_lines")  # fires in replica mode too
    try:
        for replay in ("flow", "psql"):
            with wild.connect() as conn:  # the app edits an order; its trigger edits the order's lines
                conn.execute("UPDATE orders SET total = total + 1 WHERE shop_id = 1")
            assert state_of(wild.url, profile, "1") != before
            if replay == "flow":
                assert restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE").status == "completed"
            else:
                psql = ["psql", "-X", "-q", "--single-transaction", "-f", str(script), wild.url]
                done = subprocess.run(psql, capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
            assert state_of(wild.url, profile, "1") == before, replay
    finally:
        with wild.connect() as conn:
            conn.execute("DROP TRIGGER tb_touch_lines ON orders; DROP FUNCTION tb_touch_lines()")


def test_a_column_added_not_null_without_default_is_named_before_anything_is_written(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    backup = backup_tenant(tenant_id="2", profile=profile_file, categories=["catalog"], force=True)
    with wild.connect() as conn:
        conn.execute("DELETE FROM settings WHERE shop_id = 2 AND code = 'vat'")
        conn.execute("ALTER TABLE settings ADD COLUMN prio integer NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE settings ALTER COLUMN prio DROP DEFAULT")
    changed = state_of(wild.url, load_profile(profile_file), "2")
    try:
        for dry_run in (True, False):
            with pytest.raises(RestoreRefusedError, match="table settings has column prio added since backup .* 1 row"):
                restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE", dry_run=dry_run)
        assert state_of(wild.url, load_profile(profile_file), "2") == changed
    finally:
        with wild.connect() as conn:
            conn.execute("ALTER TABLE settings DROP COLUMN prio")
            conn.execute("INSERT INTO settings VALUES (2, 'vat', 'vat-2')")


def test_a_backup_names_the_tables_holding_the_tenant_column_that_it_leaves_out(
    wild: Database, env: dict[str, Any], profile_file: str
) -> None:
    _use(env, wild)
    with wild.connect() as conn:
        conn.execute("CREATE TABLE secrets (shop_id integer REFERENCES shops, v text)")
    try:
        listed = backup_tenant(tenant_id="1", profile=profile_file, force=True)
        assert listed.type == "full" and listed.left_out == ["secrets"]  # in no category of the profile
        discovered = backup_tenant(tenant_id="1", profile=None, tenant_column="shop_id", force=True)
        assert discovered.left_out == ["billing.invoices"]  # another schema: discovery looks in public only
    finally:
        with wild.connect() as conn:
            conn.execute("DROP TABLE secrets")


def test_tables_whose_names_differ_only_in_case_get_zip_entries_that_differ_without_case_too(
    wild: Database, env: dict[str, Any], tmp_path: Path
) -> None:
    """``Notes`` and ``notes`` are two tables; unpacked on macOS or Windows, ``Notes.csv`` and
    ``notes.csv`` would be one file. The second gets ``notes~2.csv`` (the manifest says which)."""
    import zipfile

    _use(env, wild)
    profile = tmp_path / "case.toml"
    profile.write_text('name = "case"\ntenant_column = "shop_id"\n\n[categories]\nnotes = ["Notes", "notes"]\n')
    with wild.connect() as conn:
        conn.execute('CREATE TABLE "Notes" (id integer PRIMARY KEY, shop_id integer NOT NULL, body text)')
        conn.execute("CREATE TABLE notes (id integer PRIMARY KEY, shop_id integer NOT NULL, body text)")
        conn.execute("""INSERT INTO "Notes" VALUES (1, 1, 'upper'), (2, 2, 'other shop')""")
        conn.execute("INSERT INTO notes VALUES (1, 1, 'lower'), (3, 1, 'lower too')")
    try:
        backup = backup_tenant(tenant_id="1", profile=str(profile), force=True)
        assert backup.tables == {"Notes": 1, "notes": 2}
        with zipfile.ZipFile(backup.storage_path.removeprefix("file://")) as archive:
            names = [n for n in archive.namelist() if n != "manifest.json"]
        assert sorted(names) == ["Notes.csv", "notes~2.csv"]
        with wild.connect() as conn:
            conn.execute('UPDATE "Notes" SET body = NULL')
            conn.execute("DELETE FROM notes")
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        with wild.connect() as conn:
            assert conn.execute('SELECT body FROM "Notes" ORDER BY id').fetchall() == [("upper",), (None,)]
            assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [("lower",), ("lower too",)]
    finally:
        with wild.connect() as conn:
            conn.execute('DROP TABLE "Notes"; DROP TABLE notes')
