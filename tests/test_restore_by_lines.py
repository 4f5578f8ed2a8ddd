"""A restore that compares lines first (restore/fingerprint.py): only the backup's rows whose line
differs from the tenant's are staged, and the tenant's rows come back exactly, whatever changed:
updates, deletes, inserts, values holding newlines and quotes, NULL against '', a composite
key, a table scoped through another, a column whose text changed while its values did not, and
another session writing between the comparison and the apply.

Restores run the CLI in this process (no Prefect), once with reader sessions in the exported
snapshot (``PARALLEL_ROWS`` 0) and once on the restore's own session."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tenant_backup.artifact.reader import Artifact, _verify_zip
from tenant_backup.cli import main
from tenant_backup.ledger import migrate
from tenant_backup.restore import fingerprint, sides
from tenant_backup.restore.records import Records
from tests.conftest import Database, database_with
from tests.helpers import grant_app_role, state_of, url_as

SCHEMA = r"""
CREATE TABLE orgs (id text PRIMARY KEY);
-- A composite key; values with quotes, commas, newlines; NULL and '' both.
CREATE TABLE notes (org_id text NOT NULL REFERENCES orgs, n integer NOT NULL, body text, tags jsonb,
                    amount numeric(12, 2), PRIMARY KEY (org_id, n));
CREATE TABLE lines (id bigint PRIMARY KEY, org_id text NOT NULL, note_n integer NOT NULL, txt text,
                    FOREIGN KEY (org_id, note_n) REFERENCES notes);
-- No tenant column: a piece is its line's tenant's.
CREATE TABLE pieces (id bigint PRIMARY KEY, line_id bigint NOT NULL REFERENCES lines, data bytea);
INSERT INTO orgs VALUES ('acme'), ('beta');
INSERT INTO notes SELECT o, g,
    CASE g % 5 WHEN 0 THEN 'two' || chr(10) || 'lines, "quoted"' WHEN 1 THEN '' WHEN 2 THEN NULL
               ELSE 'note ' || g END,
    jsonb_build_object('g', g, 'o', o), g * 1.5
  FROM unnest(ARRAY['acme', 'beta']) o, generate_series(1, 300) g;
INSERT INTO lines SELECT row_number() OVER (), org_id, n, 'line of ' || n FROM notes, generate_series(1, 3);
INSERT INTO pieces SELECT id, id, decode(md5(id::text), 'hex') FROM lines;
-- Values equal by = that print otherwise.
CREATE TABLE measures (org_id text NOT NULL REFERENCES orgs, id integer NOT NULL, f float8, n numeric,
                       iv interval, jb jsonb, PRIMARY KEY (org_id, id));
INSERT INTO measures VALUES ('acme', 1, '-0', 1.0, '24 hours', '{"x": 1.0}'), ('acme', 2, 1, 2, '1 day', '{}');
"""

PROFILE = """
name = "notes"
tenant_column = "org_id"

[tenant_table]
name = "orgs"
key = "id"

[categories]
all = ["notes", "lines", "pieces", "measures"]
"""


@pytest.fixture
def db(pg_server: str) -> Iterator[Database]:
    with database_with(pg_server, SCHEMA) as made:
        yield made


@pytest.fixture
def profile(tmp_path: Path) -> str:
    (tmp_path / "notes.toml").write_text(PROFILE)
    return str(tmp_path / "notes.toml")


@pytest.fixture(params=["readers", "one session"])
def run(
    request: pytest.FixtureRequest,
    db: Database,
    tmp_path: Path,
    profile: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """``run(*args)``: the CLI's JSON output (exit status 0), or ``(status, stderr)`` with ``fail``."""
    monkeypatch.setattr(fingerprint, "PARALLEL_ROWS", 0 if request.param == "readers" else 10**12)
    monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", db.url)
    monkeypatch.setenv("TENANT_BACKUP_STORAGE_URL", f"file://{tmp_path}/store")
    monkeypatch.setenv("PREFECT_API_URL", "")

    def cli(*args: str, fail: bool = False) -> Any:
        capsys.readouterr()
        extra = ["--profile", profile] if args[0] == "backup" else []
        code = main([*args, *extra, "--json"])
        out, err = capsys.readouterr()
        if fail:
            assert code != 0, out
            return code, err
        assert code == 0, err
        return json.loads(out)

    return cli


def _backup(run: Any) -> str:
    return str(run("backup", "--tenant", "acme", "--force")["backup_id"])


def _restore(run: Any, backup_id: str, *args: str) -> dict[str, Any]:
    done = run("restore", backup_id, "--confirm", "RESTORE", *args)
    assert done["status"] == "completed"
    return dict(done["tables"])


def test_only_the_rows_that_differ_are_staged_and_every_row_comes_back(db: Database, run: Any, profile: str) -> None:
    backup = _backup(run)
    before = state_of(db.url, profile, "acme")
    with db.connect() as conn:
        conn.execute("UPDATE notes SET body = 'changed' WHERE org_id = 'acme' AND n IN (3, 4, 300)")  # 300: last
        conn.execute("UPDATE notes SET body = 'now' || chr(10) || 'two lines' WHERE org_id = 'acme' AND n = 6")
        conn.execute("UPDATE notes SET body = 'one line' WHERE org_id = 'acme' AND n = 10")  # had a newline
        conn.execute("UPDATE notes SET body = NULL WHERE org_id = 'acme' AND n = 11")  # '' -> NULL
        conn.execute("UPDATE notes SET body = '' WHERE org_id = 'acme' AND n = 12")  # NULL -> ''
        conn.execute("UPDATE notes SET tags = '{\"g\": 0}' WHERE org_id = 'acme' AND n = 13")
        conn.execute("UPDATE lines SET txt = txt WHERE org_id = 'acme' AND id % 7 = 0")  # rewritten, equal
        conn.execute(
            "UPDATE pieces SET data = '\\x00' WHERE id IN (SELECT id FROM lines WHERE org_id = 'acme' LIMIT 2)"
        )
        conn.execute("DELETE FROM pieces WHERE line_id IN (SELECT id FROM lines WHERE org_id = 'acme' AND note_n = 20)")
        conn.execute("DELETE FROM lines WHERE org_id = 'acme' AND note_n = 20")
        conn.execute("INSERT INTO notes VALUES ('acme', 1000, 'new', NULL, 1)")  # the backup lacks it
        conn.execute("INSERT INTO lines VALUES (100000, 'acme', 1000, 'new line')")
        conn.execute("UPDATE notes SET body = 'beta changed' WHERE org_id = 'beta'")  # another tenant
    beta = state_of(db.url, profile, "beta")
    tables = _restore(run, backup)
    assert state_of(db.url, profile, "acme") == before
    assert state_of(db.url, profile, "beta") == beta
    notes, lines, pieces = tables["notes"], tables["lines"], tables["pieces"]
    assert (notes["inserted"], notes["updated"], notes["deleted"]) == (0, 8, 1)
    assert (lines["inserted"], lines["updated"], lines["deleted"]) == (3, 0, 1)
    assert (pieces["inserted"], pieces["updated"], pieces["deleted"]) == (3, 2, 0)
    # Staged: the rows whose line differs, not all of them (the equal rewrite printed the same line).
    assert (notes["staged"], lines["staged"], pieces["staged"]) == (8, 3, 5)
    assert notes["rows"] == 300 and lines["rows"] == 900


def test_a_column_whose_text_changed_while_its_values_did_not_is_staged_but_not_written(db: Database, run: Any) -> None:
    backup = _backup(run)
    with db.connect() as conn:
        conn.execute("ALTER TABLE notes ALTER COLUMN amount TYPE numeric(12, 3)")  # 1.50 now prints 1.500
        conn.execute("UPDATE notes SET body = 'changed' WHERE org_id = 'acme' AND n = 3")
    tables = _restore(run, backup)
    assert tables["notes"]["staged"] == 300 and tables["notes"]["updated"] == 1
    with db.connect() as conn:
        assert conn.execute("SELECT body, amount::text FROM notes WHERE org_id = 'acme' AND n = 3").fetchone() == (
            "note 3",
            "4.500",
        )


@pytest.mark.parametrize("how", ["replace", "merge", "app role"])
def test_values_equal_by_their_operator_but_printed_otherwise_are_restored_as_the_backup_printed_them(
    db: Database, run: Any, profile: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = _backup(run)
    before = state_of(db.url, profile, "acme")
    with db.connect() as conn:  # each equal by = to what the backup holds
        conn.execute("UPDATE measures SET f = 0, n = 1.000, iv = '1 day', jb = '{\"x\": 1.00}' WHERE id = 1")
        if how == "app role":  # triggers fire: the full comparison (restore/apply.py)
            role = f"tb_lines_{uuid.uuid4().hex[:8]}"
            migrate(conn, "tenant_backup")
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            grant_app_role(conn, role)
            monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", url_as(db.url, role))
    try:
        tables = _restore(run, backup, *(["--mode", "merge"] if how == "merge" else []))
        assert tables["measures"]["updated"] == 1
        assert state_of(db.url, profile, "acme") == before
    finally:
        if how == "app role":
            with db.connect() as conn:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_row_rewritten_between_the_comparison_and_the_apply_fails_the_restore_and_nothing_changes(
    db: Database, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = _backup(run)
    with db.connect() as conn:
        conn.execute("UPDATE notes SET body = 'changed' WHERE org_id = 'acme' AND n = 3")
    compare = fingerprint.classify

    def writer_first(conn: psycopg.Connection, t: Any, tenant: str, snap: str) -> None:
        if t.name == "notes":  # after the tenant's rows were read, before their delta is built
            with db.connect() as other:
                other.execute("UPDATE notes SET body = 'theirs' WHERE org_id = 'acme' AND n IN (3, 4)")
        compare(conn, t, tenant, snap)

    monkeypatch.setattr(fingerprint, "classify", writer_first)
    code, err = run("restore", backup, "--confirm", "RESTORE", fail=True)
    assert code == 3 and "written by another session while the restore ran" in err and "rolled back" in err
    with db.connect() as conn:
        bodies = conn.execute("SELECT n, body FROM notes WHERE org_id = 'acme' AND n IN (3, 4) ORDER BY n").fetchall()
    assert bodies == [(3, "theirs"), (4, "theirs")]


def test_an_older_backup_without_newline_counts_is_split_again_at_newlines_outside_quotes(
    db: Database, run: Any, tmp_path: Path
) -> None:
    backup = _backup(run)
    [path] = (tmp_path / "store").rglob(f"*{backup}.zip")
    manifest = _verify_zip(path, backup)
    assert manifest.tables["notes"].newlines == 301 + 60  # rows, header, and 60 values with a newline
    older = manifest.model_copy(
        update={"tables": {n: t.model_copy(update={"newlines": None}) for n, t in manifest.tables.items()}}
    )

    class Named:
        name = "notes"

    now = sides.read_backup(Artifact(path, manifest, check_on_read=True), Named())  # type: ignore[arg-type]
    then = sides.read_backup(Artifact(path, older, check_on_read=True), Named())  # type: ignore[arg-type]
    assert now is not None and then is not None
    assert now.quoted and then.quoted and (now.hashes == then.hashes).all() and len(now.hashes) == 300
    now.spool.close()
    then.spool.close()


@pytest.mark.parametrize("mark", [False, True])
def test_records_split_at_newlines_outside_quotes_however_the_chunks_fall(mark: bool) -> None:
    rows = [b"1,a,", b'2,"x\ny",z', b'3,"q""\n\n",', b'4,"",b', b'5,"a,b\n"', b"6,,"]
    data = b"".join(r + b"\n" for r in rows)
    for size in range(1, len(data) + 1):
        records = Records(quoted=True, mark=mark)
        got = [r for start in range(0, len(data), size) for r in records.feed(data[start : start + size])]
        assert got == [r + b"," if mark else r for r in rows] and not records.pending, size
    assert len(Records(quoted=False).feed(data)) == 10  # split at every newline: more records than rows


@pytest.mark.parametrize("seed", range(5))
def test_records_of_random_csv_are_the_rows_the_writer_wrote(seed: int) -> None:
    """Against Python's csv writer (the quoting PostgreSQL's CSV uses): values of quotes, commas,
    newlines and carriage returns, split in random chunks, come back as the rows written."""
    rng = random.Random(seed)
    rows = []
    for _ in range(400):
        out = io.StringIO()
        values = ["".join(rng.choice('ab,"\n\r ') for _ in range(rng.randrange(7))) for _ in range(rng.randrange(1, 4))]
        csv.writer(out, lineterminator="\n").writerow(values)
        rows.append(out.getvalue().encode()[:-1])
    data = b"".join(r + b"\n" for r in rows)
    records = Records(quoted=True)
    got: list[bytes] = []
    at = 0
    while at < len(data):
        size = rng.randrange(1, 300)
        got += records.feed(data[at : at + size])
        at += size
    assert got == rows and not records.pending
