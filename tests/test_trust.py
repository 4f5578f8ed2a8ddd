"""A result is whole or it fails, loudly, with nothing written: row-level security, missing
privileges, unknown tenants, and rows written by another session while a restore runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg import sql

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import ConfigurationError, RestoreCheckError, RoleAccessError
from tenant_backup.ledger import migrate
from tests.conftest import Database, database_with
from tests.helpers import state_of

pytestmark = pytest.mark.usefixtures("prefect_api")

SCHEMA = """
CREATE TABLE orgs (id integer PRIMARY KEY);  -- a tenant table with nothing but its key
CREATE TABLE notes (id serial PRIMARY KEY, org_id integer NOT NULL REFERENCES orgs, body text,
                    secret boolean NOT NULL DEFAULT false);
CREATE TABLE comments (id serial PRIMARY KEY, note_id integer NOT NULL REFERENCES notes ON DELETE CASCADE, body text);
-- Supabase-like: users in another schema, under row-level security that hides them all from app roles.
CREATE SCHEMA auth;
CREATE TABLE auth.users (id integer PRIMARY KEY);
INSERT INTO auth.users VALUES (1), (2);
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY nobody ON auth.users USING (false);
-- A tenant column, no tenant table:
CREATE TABLE kv (space text NOT NULL, k text NOT NULL, v text, user_id integer REFERENCES auth.users);
INSERT INTO orgs VALUES (1), (2);
INSERT INTO notes (org_id, body, secret) SELECT 1 + i % 2, 'note ' || i, i % 4 = 0 FROM generate_series(0, 199) i;
INSERT INTO comments (note_id, body) SELECT id, 'on ' || body FROM notes;
INSERT INTO kv VALUES ('a', 'x', '1', 1), ('a', 'y', '2', NULL);
-- The app's row-level security: a role sees no secret note, even the table's owner (FORCE).
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY not_secret ON notes USING (NOT secret);
"""

PROFILE = """
name = "notes"
tenant_column = "org_id"
[tenant_table]
name = "orgs"
key = "id"
[categories]
notes = ["notes", "comments"]
org = ["orgs"]
"""


@pytest.fixture(scope="module")
def notes_db(pg_server: str) -> Iterator[Database]:
    with database_with(pg_server, SCHEMA) as db:
        with db.connect() as conn:
            migrate(conn, "tenant_backup")
        yield db


@pytest.fixture
def role(notes_db: Database) -> Iterator[str]:
    """A login role that may read and write the app's tables and the ledger, nothing more."""
    name = f"tb_role_{uuid.uuid4().hex[:8]}"
    with notes_db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        for statement in (
            "GRANT USAGE ON SCHEMA public, tenant_backup, auth TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, tenant_backup TO {r}",
            "GRANT SELECT ON auth.users TO {r}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
            "GRANT TEMPORARY ON DATABASE {d} TO {r}",
        ):
            conn.execute(sql.SQL(statement).format(r=sql.Identifier(name), d=sql.Identifier(notes_db.name)))
    try:
        yield name
    finally:
        with notes_db.connect() as conn:
            conn.execute("ALTER TABLE notes OWNER TO CURRENT_USER")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def profile_file(tmp_path: Path) -> str:
    path = tmp_path / "notes.toml"
    path.write_text(PROFILE, encoding="utf-8")
    return str(path)


def _as(db: Database, role: str) -> str:
    parts = urlsplit(db.url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@')[-1]}"))


def _backups(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone()[0])  # type: ignore[index]


def _cli(prefect_api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANT_BACKUP_")}
    env["PREFECT_API_URL"] = prefect_api
    return subprocess.run(
        [sys.executable, "-m", "tenant_backup.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_row_level_security_that_hides_rows_refuses_the_backup_before_anything_is_written(
    notes_db: Database, role: str, profile_file: str, prefect_api: str, tmp_path: Path
) -> None:
    before = _backups(notes_db)
    failed = _cli(
        prefect_api,
        "backup",
        "--db",
        _as(notes_db, role),
        "--storage",
        f"file://{tmp_path}/store",
        "--tenant",
        "1",
        "--profile",
        profile_file,
        "--json",
    )
    assert failed.returncode == 2 and json.loads(failed.stdout)["status"] == "error"  # --json: one object, failed too
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith(f"error: role {role} cannot back up tenant 1")
    assert "row-level security of table notes" in failed.stderr and "BYPASSRLS" in failed.stderr
    assert _backups(notes_db) == before and not (tmp_path / "store").exists()

    with notes_db.connect() as conn:  # the fix the message names
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(role)))
    done = _cli(
        prefect_api,
        "backup",
        "--db",
        _as(notes_db, role),
        "--storage",
        f"file://{tmp_path}/store",
        "--tenant",
        "1",
        "--profile",
        profile_file,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"] == {"notes": 100, "comments": 100, "orgs": 1}  # secret notes too


def test_a_table_owner_under_force_row_level_security_is_told_to_lift_force(
    notes_db: Database, role: str, profile_file: str, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env["use"](notes_db)
    with notes_db.connect() as conn:
        conn.execute(sql.SQL("ALTER TABLE notes OWNER TO {}").format(sql.Identifier(role)))
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", _as(notes_db, role))
    with pytest.raises(RoleAccessError, match="FORCE ROW LEVEL SECURITY.*NO FORCE ROW LEVEL SECURITY"):
        backup_tenant(tenant_id="2", profile=profile_file, force=True)
    with notes_db.connect() as conn:
        conn.execute("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY")
    try:
        assert backup_tenant(tenant_id="2", profile=profile_file, force=True).tables["notes"] == 100
    finally:
        with notes_db.connect() as conn:
            conn.execute("ALTER TABLE notes FORCE ROW LEVEL SECURITY")


def test_a_restore_by_a_role_under_row_level_security_is_refused_and_changes_nothing(
    notes_db: Database, role: str, profile_file: str, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env["use"](notes_db)
    backup = backup_tenant(tenant_id="1", profile=profile_file, force=True)  # as the superuser
    with notes_db.connect() as conn:
        conn.execute("INSERT INTO notes (org_id, body, secret) VALUES (1, 'added later', true)")
    changed = state_of(notes_db.url, profile_file, "1")
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", _as(notes_db, role))
    with pytest.raises(RoleAccessError, match=f"role {role} cannot restore into tenant 1: row-level security"):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
    with pytest.raises(RoleAccessError):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), dry_run=True)
    assert state_of(notes_db.url, profile_file, "1") == changed


def test_a_missing_privilege_is_named_with_the_grant_that_fixes_it(
    notes_db: Database, role: str, profile_file: str, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env["use"](notes_db)
    with notes_db.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE SELECT ON comments FROM {}").format(sql.Identifier(role)))
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", _as(notes_db, role))
    before = _backups(notes_db)
    with pytest.raises(
        RoleAccessError, match=rf"lacks SELECT on table comments.*GRANT SELECT ON .*comments.* TO {role}"
    ):
        backup_tenant(tenant_id="1", profile=profile_file, force=True)
    assert _backups(notes_db) == before


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        ("999", "tenant 999 does not exist: table orgs has no row with id = '999'"),
        ("abc", "not a valid value of orgs.id"),
    ],
)
def test_an_unknown_tenant_is_refused_even_when_its_table_has_no_name_column(
    tenant: str, message: str, notes_db: Database, profile_file: str, env: dict[str, Any]
) -> None:
    env["use"](notes_db)
    before = _backups(notes_db)
    with pytest.raises(ConfigurationError, match=message):
        backup_tenant(tenant_id=tenant, profile=profile_file, force=True)
    assert _backups(notes_db) == before


def test_without_a_tenant_table_a_tenant_with_no_rows_needs_allow_empty(
    notes_db: Database, env: dict[str, Any]
) -> None:
    env["use"](notes_db)
    with pytest.raises(ConfigurationError, match="tenant b has no row in any table with column 'space'.*--allow-empty"):
        backup_tenant(tenant_id="b", profile=None, tenant_column="space", force=True)
    empty = backup_tenant(tenant_id="b", profile=None, tenant_column="space", allow_empty=True, force=True)
    assert empty.record_count == 0 and empty.tables == {"kv": 0}
    assert backup_tenant(tenant_id="a", profile=None, tenant_column="space", force=True).tables == {"kv": 2}


def test_rows_written_by_another_session_during_a_restore_roll_it_back_and_say_so(
    notes_db: Database, profile_file: str, env: dict[str, Any]
) -> None:
    env["use"](notes_db)
    backup = backup_tenant(tenant_id="2", profile=profile_file, categories=["notes"], force=True)
    with notes_db.connect() as conn:
        conn.execute(
            "UPDATE comments SET body = 'edited' WHERE id = "
            "(SELECT min(c.id) FROM comments c JOIN notes n ON n.id = c.note_id WHERE n.org_id = 2)"
        )
        # The app's own trigger (ALWAYS: it fires in replica mode too) pauses the restore right
        # after its last write to notes, long enough for the app to write a note of the tenant.
        conn.execute(
            "CREATE FUNCTION tb_pause() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
        )
        conn.execute("CREATE TRIGGER tb_pause AFTER DELETE ON notes FOR EACH STATEMENT EXECUTE FUNCTION tb_pause()")
        conn.execute("ALTER TABLE notes ENABLE ALWAYS TRIGGER tb_pause")
    written = threading.Event()

    def app_writes() -> None:
        with notes_db.connect() as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()
                if row and row[0]:
                    conn.execute("INSERT INTO notes (org_id, body) VALUES (2, 'written during the restore')")
                    written.set()
                    return
                time.sleep(0.05)

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        with pytest.raises(RestoreCheckError, match="written by another session while the restore ran") as caught:
            restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
        assert "stop the app's writes for this tenant" in str(caught.value) and "table notes" in str(caught.value)
    finally:
        writer.join(60)
        with notes_db.connect() as conn:
            conn.execute("DROP TRIGGER tb_pause ON notes; DROP FUNCTION tb_pause()")
            conn.execute("DELETE FROM notes WHERE body = 'written during the restore'")
    assert written.is_set()
    with notes_db.connect() as conn:  # rolled back: the edit the restore would have undone is still there
        assert conn.execute("SELECT count(*) FROM comments WHERE body = 'edited'").fetchone() == (1,)


def test_a_row_another_session_edits_during_a_restore_that_compares_only_changes_rolls_it_back(
    notes_db: Database, profile_file: str, env: dict[str, Any], tmp_path: Path
) -> None:
    """Without triggers, a restore compares every row once and checks only what it changed; a
    row it did not change but another session edited meanwhile must still fail the check."""
    env["use"](notes_db)
    backup = backup_tenant(tenant_id="2", profile=profile_file, categories=["notes"], force=True)
    mine = "(SELECT min(c.id) FROM comments c JOIN notes n ON n.id = c.note_id WHERE n.org_id = 2)"
    theirs = "(SELECT max(c.id) FROM comments c JOIN notes n ON n.id = c.note_id WHERE n.org_id = 2)"
    with notes_db.connect() as conn:
        conn.execute(f"UPDATE comments SET body = 'edited since' WHERE id = {mine}")  # the restore will undo it
    holder = notes_db.connect()
    holder.autocommit = False  # holds the row the restore updates until the app has written another
    holder.execute(f"SELECT 1 FROM comments WHERE id = {mine} FOR UPDATE")
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # the CLI, serverless
    restore = subprocess.Popen(
        [sys.executable, "-m", "tenant_backup.cli", "restore", backup.backup_id, "--confirm", "RESTORE"],
        env={**plain, "PREFECT_HOME": str(tmp_path / "prefect")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with notes_db.connect() as app:
            deadline = time.monotonic() + 60
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE%comments%'"
            )
            while app.execute(waiting).fetchone() == (0,):
                assert time.monotonic() < deadline and restore.poll() is None, "the restore never reached its update"
                time.sleep(0.05)
            app.execute(f"UPDATE comments SET body = 'written during the restore' WHERE id = {theirs}")
    finally:
        holder.rollback()
        holder.close()
        _, stderr = restore.communicate(timeout=60)
    assert restore.returncode == 3, stderr
    assert "written by another session while the restore ran" in stderr and "comments" in stderr, stderr
    with notes_db.connect() as conn:  # rolled back: the edit is still there, and so is the app's write
        assert conn.execute("SELECT count(*) FROM comments WHERE body = 'edited since'").fetchone() == (1,)
        conn.execute(f"UPDATE comments SET body = 'on note' WHERE id = {theirs}")


def test_a_row_lock_held_past_lock_timeout_during_a_restore_names_its_holder_and_table(
    notes_db: Database, profile_file: str, env: dict[str, Any], tmp_path: Path
) -> None:
    env["use"](notes_db)
    backup = backup_tenant(tenant_id="2", profile=profile_file, categories=["notes"], force=True)
    mine = "(SELECT min(c.id) FROM comments c JOIN notes n ON n.id = c.note_id WHERE n.org_id = 2)"
    with notes_db.connect() as conn:
        conn.execute(f"UPDATE comments SET body = 'edited for the lock' WHERE id = {mine}")
    holder = notes_db.connect(application_name="report-job")
    holder.autocommit = False
    holder.execute(f"SELECT 1 FROM comments WHERE id = {mine} FOR UPDATE")
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tenant_backup.cli", "restore", backup.backup_id, "--confirm", "RESTORE"],
            env={**plain, "PREFECT_HOME": str(tmp_path / "prefect"), "TENANT_BACKUP_LOCK_TIMEOUT": "1s"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 3, done.stderr  # it had started: rolled back
    assert "waited longer than lock_timeout=1s" in done.stderr and "'report-job' (pid " in done.stderr
    assert "on comments" in done.stderr and "nothing changed" in done.stderr
    with notes_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM comments WHERE body = 'edited for the lock'").fetchone() == (1,)


def test_row_level_security_on_a_table_the_restore_only_reads_is_refused_too(
    notes_db: Database, role: str, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """auth.users is outside the backup; the restore reads it to check the rows' references, and
    its row-level security would hide the users: refused up front, naming it, not a raw error."""
    env["use"](notes_db)
    backup = backup_tenant(tenant_id="a", profile=None, tenant_column="space", force=True)
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", _as(notes_db, role))
    with pytest.raises(RoleAccessError, match=f"role {role} cannot restore into tenant a: .*auth.users"):
        restore_backup(backup_id=uuid.UUID(backup.backup_id), confirm="RESTORE")
