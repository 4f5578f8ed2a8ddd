"""The command line without a Prefect server: the same sequences run in the process, Prefect is
never imported, bad input is one ``error:`` line with exit status 2 before any work."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Database, DemoDatabase, drop_database, make_database
from tests.helpers import state_of

# Runs the CLI's main() and fails the process if Prefect was imported along the way.
_NO_PREFECT = (
    "import sys\n"
    "from tenant_backup.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "loaded = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
    "if loaded:\n"
    "    print(f'prefect was imported: {loaded[:5]}', file=sys.stderr)\n"
    "    sys.exit(99)\n"
    "sys.exit(code)\n"
)


def cli(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process with no Prefect API anywhere (no variable, an empty home), and
    ``settings`` as TENANT_BACKUP_<NAME> variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TENANT_BACKUP_"))}
    env["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tb-no-prefect-")
    env.update({f"TENANT_BACKUP_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-c", _NO_PREFECT, *args], capture_output=True, text=True, env=env, timeout=120
    )


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_backup_restore_and_verify_run_without_prefect_and_give_the_rows_back(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    before = state_of(pos_db.url, "pos", tenant)
    backup = _json(cli("backup", "--tenant", tenant, "--category", "clients", "--category", "ventes", *where))
    assert backup["status"] == "completed" and backup["tables"]["clients"] > 0
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET notes = 'changed' WHERE etablissement_id = %s", (tenant,))
    short = backup["backup_id"][:8]  # a unique prefix is enough, as git and docker take
    plan = _json(cli("restore", short, "--dry-run", *where))
    assert plan["status"] == "planned" and plan["tables"]["clients"]["updated"] > 0
    done = _json(cli("restore", short, "--confirm", "RESTORE", *where))
    assert done["status"] == "completed" and state_of(pos_db.url, "pos", tenant) == before
    assert _json(cli("verify", short, *where))["status"] == "verified"
    listed = _json(cli("list", "--db", pos_db.url, "--tenant", tenant, "--json"))
    assert listed["backups"][0]["id"] == backup["backup_id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "not-a-uuid"], "'not-a-uuid' is not a backup id"),
        (["restore", "0123", "--confirm", "yes"], "--confirm takes the word RESTORE"),
        (["restore", "0123", "--db", "mysql://u@h/db"], "mysql:// is not a PostgreSQL URL"),
        (["restore", "0123", "--db", "postgresql://u@h:port/db"], "the database URL is not valid"),
        (["backup", "--tenant", "t", "--storage", "ftp://host/dir"], "ftp:// is not a storage"),
        (["backup", "--tenant", "t", "--requested-by", "bob"], "'bob' is not an app user id"),
        (["restore", "0123", "--require-approval"], "--require-approval (the approval form lives in the Prefect UI)"),
        (["backup", "--tenant", "t", "--profile", "nope"], "no shipped profile 'nope'"),
        (["backup", "--tenant", "t", "--category", "factures"], "unknown category 'factures'"),
        (["backup", "--tenant", "t", "--tenant-column", "nope"], "no table of schema 'public' has column 'nope'"),
        (
            ["backup", "--tenant", "t", "--tenant-column", "etablissement_id", "--category", "factures"],
            "--category names tables: choose among: audit_logs, categories, clients",
        ),
        (
            ["backup", "--tenant", "00000000-0000-0000-0000-000000000000"],
            "tenant 00000000-0000-0000-0000-000000000000 does not exist",
        ),
        (["sync-schedules"], "sync-schedules (it writes the schedules of a Prefect deployment) needs a Prefect server"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_status_2_before_any_work(
    args: list[str], message: str, pos_db: DemoDatabase, tmp_path: Path
) -> None:
    where = [] if any(a.startswith("--db") for a in args) else ["--db", pos_db.url]
    if args[0] in ("backup", "restore") and "--storage" not in args:
        where += ["--storage", f"file://{tmp_path}/store"]
    failed = cli(*args, *where)
    assert failed.returncode == 2, failed.stderr
    assert failed.stdout == "" and failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith("error: ") and message in failed.stderr
    assert not (tmp_path / "store").exists()


def test_a_constraint_that_refuses_the_restore_is_named_with_exit_status_3(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    tenant = pos_db.tenants[1].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    backup = _json(cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where))
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET points_fidelite = -5 WHERE etablissement_id = %s", (tenant,))
        conn.execute("ALTER TABLE clients ADD CONSTRAINT tb_test_points CHECK (points_fidelite <> 0) NOT VALID")
    changed = state_of(pos_db.url, "pos", tenant)
    try:
        failed = cli("restore", backup["backup_id"], "--confirm", "RESTORE", *where)
    finally:
        with pos_db.connect() as conn:
            conn.execute("ALTER TABLE clients DROP CONSTRAINT tb_test_points")
    assert failed.returncode == 3 and failed.stderr.count("\n") == 1, failed.stderr
    assert "table clients" in failed.stderr and "violates constraint tb_test_points" in failed.stderr
    assert "nothing changed" in failed.stderr and state_of(pos_db.url, "pos", tenant) == changed


def test_an_artifact_outside_the_ledger_restores_from_its_file(pos_db: DemoDatabase, tmp_path: Path) -> None:
    tenant = pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    before = state_of(pos_db.url, "pos", tenant)
    backup = _json(cli("backup", "--tenant", tenant, "--category", "produits", "--force", *where))
    downloaded = tmp_path / "downloaded.zip"
    shutil.copy(backup["storage_path"].removeprefix("file://"), downloaded)
    _json(cli("delete", backup["backup_id"], "--confirm", "DELETE", *where))  # gone from the ledger and storage
    with pos_db.connect() as conn:
        conn.execute("UPDATE produits SET prix_vente = 0 WHERE etablissement_id = %s", (tenant,))
    refused = cli("restore", "--file", str(downloaded), *where)
    assert refused.returncode == 2 and "--confirm RESTORE" in refused.stderr
    done = _json(cli("restore", "--file", str(downloaded), "--confirm", "RESTORE", *where))
    assert done["backup_id"] == backup["backup_id"] and state_of(pos_db.url, "pos", tenant) == before
    with pos_db.connect() as conn:
        logged = conn.execute(
            "SELECT backup_id, result, details FROM tenant_backup.backup_restore_logs WHERE tenant_id = %s "
            "AND action = 'restore' ORDER BY created_at DESC LIMIT 1",
            (tenant,),
        ).fetchone()
    assert logged is not None and logged[0] is None and logged[1] == "success"
    assert logged[2]["file"] == str(downloaded) and logged[2]["artifact_backup_id"] == backup["backup_id"]
    damaged = tmp_path / "damaged.zip"
    data = bytearray(downloaded.read_bytes())
    with zipfile.ZipFile(downloaded) as archive:  # a bit of the largest table's compressed rows
        entry = max((i for i in archive.infolist() if i.filename != "manifest.json"), key=lambda i: i.compress_size)
    assert entry.compress_type == zipfile.ZIP_DEFLATED
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    start = entry.header_offset + 30 + name_length + extra_length  # the local header's own lengths
    data[start + entry.compress_size // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    refused = cli("restore", "--file", str(damaged), "--confirm", "RESTORE", *where)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    # Wherever the bit flips (a CRC, a length, a back-reference of the deflate stream: zlib raises
    # then), the artifact is refused as damaged, never an unexpected error. A flip that changes no
    # decoded byte (a padding bit, the stream's end code) damages no row: the sha256 holds, it must pass.
    from tenant_backup.artifact.reader import open_verified
    from tenant_backup.errors import VerificationError

    pristine = downloaded.read_bytes()
    rows = zlib.decompress(pristine[start : start + entry.compress_size], -15)
    for offset in [
        *range(start, start + entry.compress_size, max(1, entry.compress_size // 60)),
        start + entry.compress_size - 1,
    ]:
        flipped = bytearray(pristine)
        flipped[offset] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        try:
            decoded = zlib.decompressobj(-15).decompress(bytes(flipped[start : start + entry.compress_size]))
            unchanged = decoded[: entry.file_size] == rows  # zipfile stops at the entry's size, as here
        except zlib.error:
            unchanged = False
        if unchanged:
            assert open_verified(damaged).manifest.backup_id == backup["backup_id"]
        else:
            with pytest.raises(VerificationError, match="damaged|does not match"):
                open_verified(damaged)


def test_list_on_a_database_never_migrated_says_to_migrate_and_migrate_says_what_it_did(pg_server: str) -> None:
    db: Database = make_database(pg_server)
    try:
        listed = cli("list", "--db", db.url)
        assert listed.returncode == 2 and "run `tenant-backup migrate`" in listed.stderr
        with db.connect() as conn:  # list created nothing
            assert conn.execute("SELECT to_regnamespace('tenant_backup')").fetchone() == (None,)
        first = cli("migrate", "--db", db.url)
        assert first.returncode == 0 and first.stdout.startswith("created the ledger (schema tenant_backup, version")
        again = cli("migrate", "--db", db.url)
        assert again.returncode == 0 and "is up to date" in again.stdout
        assert cli("list", "--db", db.url).stdout.startswith("0 backups")
    finally:
        drop_database(db)


def test_one_tenant_spelled_two_ways_is_one_tenant(pos_db: DemoDatabase, tmp_path: Path) -> None:
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    first = _json(cli("backup", "--tenant", tenant.upper(), "--category", "tables", "--force", *where, "--json"))
    assert first["tenant_id"] == tenant and f"/{tenant}/" in first["storage_path"]  # the database's spelling
    again = cli("backup", "--tenant", "{" + tenant.replace("-", "") + "}", "--category", "tables", *where)
    assert again.returncode == 2 and "was backed up at" in again.stderr  # the same tenant: throttled
    listed = _json(cli("list", "--db", pos_db.url, "--tenant", tenant.upper(), "--json"))
    assert first["backup_id"] in {b["id"] for b in listed["backups"]}


def test_a_restore_says_at_once_whom_it_waits_for_and_fails_naming_them(pos_db: DemoDatabase, tmp_path: Path) -> None:
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where, "--json"))
    with psycopg.connect(pos_db.url, autocommit=True, application_name="ops-console") as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('tenant-backup'), hashtext(%s))", (tenant,))
        done = cli("restore", backup["backup_id"], "--confirm", "RESTORE", *where, lock_timeout="1s")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"tenant-backup: restore of tenant {tenant} waits for the tenant's lock, held by")
    assert "'ops-console'" in lines[0] and "'ops-console'" in lines[1] and "nothing was changed" in lines[1]


def _sessions_opened(db: DemoDatabase) -> int:
    with db.connect() as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def test_all_tenants_backs_up_each_one_and_a_busy_tenant_fails_alone_with_exit_status_3(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    busy = pos_db.tenants[1]
    with pos_db.connect() as holder:  # another run of that tenant holds its lock
        holder.execute("SELECT pg_advisory_lock(hashtext('tenant-backup'), hashtext(%s))", (busy.id,))
        done = cli("backup", "--all-tenants", "--force", *where, lock_timeout="1s")
    last = done.stderr.strip().splitlines()[-1]  # after the lock's wait notice and the tenant's failure
    assert done.returncode == 3 and last.startswith("error: 1 of 3 tenant backups failed"), done.stderr
    assert done.stderr.count("waits for the tenant's lock") == 1, done.stderr  # said once, not once per logger
    out = json.loads(done.stdout)
    by_tenant = {o["tenant_id"]: o for o in out["tenants"]}
    assert (out["completed"], out["failed"], out["skipped"]) == (2, 1, 0)
    assert by_tenant[busy.id]["status"] == "failed" and "its lock is held by" in by_tenant[busy.id]["error"]
    for tenant in pos_db.tenants:
        if tenant.id != busy.id:
            outcome = by_tenant[tenant.id]
            assert outcome["status"] == "completed" and outcome["tenant_name"] == tenant.name
            assert outcome["record_count"] > 0 and outcome["backup_id"]
    again = _json(cli("backup", "--all-tenants", *where))  # within 5 minutes: the two backed up are skipped
    statuses = {o["tenant_id"]: o["status"] for o in again["tenants"]}
    assert all(statuses[t.id] == "skipped" for t in pos_db.tenants if t.id != busy.id), again
    assert again["failed"] == 0


def test_a_run_of_many_tenants_opens_a_session_per_worker_not_one_per_table(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    before = _sessions_opened(pos_db)
    out = _json(
        cli("backup", "--all-tenants", "--force", "--db", pos_db.url, "--storage", f"file://{tmp_path}/s", "--json")
    )
    opened = _sessions_opened(pos_db) - before - 1  # less the one that counts
    assert out["completed"] == 3
    # A session per table and step would be 3 tenants x (15 tables + 7 steps) = 66. Lent, they are:
    # 2 checks before the work, a lock holder per tenant, and per tenant at once (2) its workers (<= 4) and itself.
    assert opened <= 2 + 3 + 2 * (4 + 1), opened


def test_a_role_without_privileges_is_refused_with_exit_status_2_not_reported_as_a_bug(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    role = f"tb_np_{os.urandom(4).hex()}"
    assert cli("migrate", "--db", pos_db.url).returncode == 0  # the ledger exists; the role may not read it
    with pos_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    parts = urlsplit(pos_db.url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
    try:
        for args in (["backup", "--all-tenants", "--storage", f"file://{tmp_path}/store"], ["list"]):
            done = cli(*args, "--db", url)
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith("error: ") and "may not do what this needs" in done.stderr
            assert "a bug" not in done.stderr
    finally:
        with pos_db.connect() as conn:
            conn.execute(f"DROP ROLE {role}")


def test_rows_whose_tenant_id_the_tenant_table_lacks_fail_a_run_of_every_tenant_instead_of_going_unsaved(
    pg_server: str, tmp_path: Path
) -> None:
    db = make_database(pg_server)
    known, stray, older = (f"{n:08d}-0000-4000-8000-000000000000" for n in (1, 2, 3))
    try:
        with db.connect() as conn:
            conn.execute(
                "CREATE TABLE tenants (id uuid PRIMARY KEY, name text);"
                "CREATE TABLE orders (id int PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants);"
                "CREATE TABLE notes (id int PRIMARY KEY, tenant_id uuid);"  # no key to tenants
                "CREATE TABLE legacy (id int PRIMARY KEY, tenant_id uuid);"
                f"INSERT INTO tenants VALUES ('{known}', 'Known');"
                f"INSERT INTO orders VALUES (1, '{known}');"
                f"INSERT INTO notes VALUES (1, '{known}'), (2, '{stray}'), (3, '{stray}'), (4, NULL);"
                f"INSERT INTO legacy VALUES (1, '{older}');"
                # added NOT VALID: the row older than the key still breaks it
                "ALTER TABLE legacy ADD FOREIGN KEY (tenant_id) REFERENCES tenants NOT VALID;"
            )
        where = ["--tenant-column", "tenant_id", "--db", db.url, "--storage", f"file://{tmp_path}/s", "--json"]
        done = cli("backup", "--all-tenants", "--force", *where)
        assert done.returncode == 3, done.stderr
        out = json.loads(done.stdout)
        by_tenant = {o["tenant_id"]: o for o in out["tenants"]}
        assert (out["completed"], out["failed"]) == (1, 2) and by_tenant[known]["status"] == "completed"
        assert "2 rows hold tenant id " + stray in by_tenant[stray]["error"]
        assert "notes (2)" in by_tenant[stray]["error"] and "no backup holds them" in by_tenant[stray]["error"]
        assert "legacy (1)" in by_tenant[older]["error"]
        assert f"{stray}" in done.stderr  # said on the terminal too, not only in --json
        shown = cli("backup", "--all-tenants", "--force", *where[:-1])
        assert shown.returncode == 3 and shown.stdout.startswith("1 tenant: 1 backed up"), shown.stdout
        assert "2 tenant ids that rows hold but the tenant table lacks (failed):" in shown.stdout
        assert shown.stderr.count(stray) == 1, shown.stderr  # listed on stdout; the error line names it once
        with db.connect() as conn:  # the operator's fix: the stray tenant's row; the older rows go
            conn.execute(f"INSERT INTO tenants VALUES ('{stray}', 'Stray'); DELETE FROM legacy")
        fixed = _json(cli("backup", "--all-tenants", "--force", *where))
        assert (fixed["completed"], fixed["failed"]) == (2, 0)
    finally:
        drop_database(db)


def test_a_dry_run_says_how_much_room_the_restore_needs_on_the_database_server(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(cli("backup", "--tenant", tenant, "--force", *where, "--json"))
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET notes = 'changed' WHERE etablissement_id = %s", (tenant,))
    plan = _json(cli("restore", backup["backup_id"], "--dry-run", *where, "--json"))
    space = plan["space"]
    assert space["staging_bytes"] >= backup["file_size"]  # at least the rows' bytes, uncompressed
    assert space["wal_bytes"] > 0 and space["temp_file_bytes"] == 0  # a few clients to write; fits in work_mem
    assert space["disk_free"] > 0  # the test server runs on this machine: its volume is measured
    shown = cli("restore", backup["backup_id"], "--dry-run", *where)
    assert shown.returncode == 0 and "room on the database server: " in shown.stdout, shown.stderr
    assert "of staging in temporary tables" in shown.stdout and "free on the server" in shown.stdout


def test_a_restore_whose_comparison_would_pass_temp_file_limit_is_refused_before_writing(
    pg_server: str, tmp_path: Path
) -> None:
    from tenant_backup.demo.generate import load_demo

    db = make_database(pg_server)
    try:
        with db.connect() as conn:
            tenant = load_demo(conn, "pos", 1, 6_000)[0].id  # ~2,700 sale lines: ~400 kB to compare
        where = ["--db", db.url, "--storage", f"file://{tmp_path}/store"]
        backup = _json(cli("backup", "--tenant", tenant, "--force", *where, "--json"))
        with db.connect() as conn:
            conn.execute("UPDATE clients SET notes = 'changed'")
            conn.execute(f'ALTER DATABASE "{db.name}" SET temp_file_limit = 64')  # 64 kB of temporary files
        # With 64 kB of work_mem, comparing the sale lines spills more than that to temporary files.
        done = cli("restore", backup["backup_id"], "--confirm", "RESTORE", *where, work_mem="64kB")
        assert done.returncode == 2, done.stderr
        assert "of temporary files to compare its largest table, and temp_file_limit is 64kB" in done.stderr
        assert "ALTER DATABASE" in done.stderr and "nothing was written" in done.stderr
        plan = cli("restore", backup["backup_id"], "--dry-run", *where, work_mem="64kB")  # it stages and compares too
        assert plan.returncode == 2 and "temp_file_limit is 64kB" in plan.stderr, plan.stderr
        with db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM clients WHERE notes IS DISTINCT FROM 'changed'").fetchone() == (
                0,
            )
            conn.execute(f'ALTER DATABASE "{db.name}" RESET temp_file_limit')
        assert cli("restore", backup["backup_id"], "--confirm", "RESTORE", *where).returncode == 0  # with room
    finally:
        drop_database(db)


def test_a_restore_that_needs_more_disk_than_the_server_has_is_refused_naming_both() -> None:
    from tenant_backup.errors import RestoreRefusedError
    from tenant_backup.restore.space import check_room
    from tenant_backup.results import SpaceNeed

    need = SpaceNeed(staging_bytes=3_000_000_000, temp_file_bytes=0, wal_bytes=1_000_000_000, disk_free=2_500_000_000)
    with pytest.raises(
        RestoreRefusedError, match=r"needs about 3.73GB on the data directory's volume .* has 2.33GB free"
    ):
        check_room(need, "t1", "b1")
    check_room(need.model_copy(update={"disk_free": 5_000_000_000}), "t1", "b1")
    apart = need.model_copy(update={"disk_free": 5_000_000_000, "wal_free": 500_000_000, "wal_on_data_volume": False})
    with pytest.raises(RestoreRefusedError, match=r"954MB on pg_wal's volume .* has 477MB free"):
        check_room(apart, "t1", "b1")
    check_room(need.model_copy(update={"disk_free": None}), "t1", "b1")  # a managed server: not known, goes on


def test_a_database_that_is_not_the_default_profiles_says_which_option_to_pass(
    crm_db: DemoDatabase, tmp_path: Path
) -> None:
    where = ["--db", crm_db.url, "--storage", f"file://{tmp_path}/store"]
    for args in (["--tenant", crm_db.tenants[0].id], ["--all-tenants"]):
        done = cli("backup", *args, *where)  # a CRM database, and no --profile: pos is the default
        assert done.returncode == 2, done.stderr
        assert "it is not this database's profile (without --profile, it is pos)" in done.stderr, done.stderr
        assert "--profile pos, crm or your own app.toml" in done.stderr
        assert "--tenant-column company_id (it is the column of " in done.stderr  # what the CRM tables point with
    assert _json(cli("backup", "--all-tenants", "--profile", "crm", "--json", *where))["completed"] == 3


def test_the_tenant_table_asked_into_another_tenant_is_refused_by_name_and_schema_names_are_taken(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    mine, other = pos_db.tenants[0].id, pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(cli("backup", "--tenant", mine, "--force", *where, "--json"))["backup_id"]
    into = ["--target-tenant", other, "--dry-run", *where]
    for tables in (["etablissements"], ["etablissements", "clients"]):
        done = cli("restore", backup, *(a for t in tables for a in ("--table", t)), *into)
        assert done.returncode == 2, done.stderr
        assert "table etablissements is the tenant table: a restore into another tenant" in done.stderr
    plan = _json(cli("restore", backup, "--table", "public.clients", "--dry-run", "--json", *where))
    assert list(plan["tables"]) == ["clients"]  # the default schema's tables go by either name


def test_roles_with_exactly_the_printed_grants_back_up_and_restore_and_the_backup_role_writes_no_app_table(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    suffix = os.urandom(3).hex()
    backup_role, restore_role = f"tb_backup_{suffix}", f"tb_restore_{suffix}"
    parts = urlsplit(pos_db.url)

    def as_role(role: str) -> str:
        return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))

    assert cli("migrate", "--db", pos_db.url).returncode == 0  # the owner creates the ledger once
    with pos_db.connect() as conn:
        conn.execute(f"CREATE ROLE {backup_role} LOGIN; CREATE ROLE {restore_role} LOGIN")
    tenant = pos_db.tenants[1].id
    store = ["--storage", f"file://{tmp_path}/store"]
    try:
        printed = cli("grants", "--role", backup_role, "--db", pos_db.url)
        selects = [line for line in printed.stdout.splitlines() if line.startswith("GRANT SELECT ON ")]
        assert printed.returncode == 0 and '"public"."clients"' in selects[0], printed.stdout
        assert 'INSERT, UPDATE, DELETE ON "public"' not in printed.stdout  # a backup role writes no app table
        with pos_db.connect() as conn:
            assert conn.execute("SELECT has_table_privilege(%s, 'clients', 'SELECT')", (backup_role,)).fetchone() == (
                False,
            )  # printed, not applied
        for role, extra in ((backup_role, []), (restore_role, ["--restore"])):
            assert cli("grants", "--role", role, *extra, "--apply", "--db", pos_db.url).returncode == 0
        backup = _json(cli("backup", "--tenant", tenant, "--force", "--json", "--db", as_role(backup_role), *store))
        with (
            psycopg.connect(as_role(backup_role), autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("UPDATE clients SET notes = 'by the backup role'")
        refused = cli("restore", backup["backup_id"], "--confirm", "RESTORE", "--db", as_role(backup_role), *store)
        assert refused.returncode == 2 and f"role {backup_role} cannot restore into tenant" in refused.stderr
        with pos_db.connect() as conn:
            conn.execute("UPDATE clients SET notes = 'changed' WHERE etablissement_id = %s", (tenant,))
        done = _json(
            cli("restore", backup["backup_id"], "--confirm", "RESTORE", "--json", "--db", as_role(restore_role), *store)
        )
        assert done["tables"]["clients"]["updated"] > 0 and done["triggers"] == "skipped"  # SET ON PARAMETER
    finally:
        with pos_db.connect() as conn:
            for role in (backup_role, restore_role):
                conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_restore_into_another_tenant_names_every_table_whose_keys_that_tenant_does_not_own(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    mine, other = pos_db.tenants[0].id, pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(
        cli("backup", "--tenant", mine, "--category", "clients", "--category", "tables", "--force", "--json", *where)
    )
    done = cli("restore", backup["backup_id"], "--target-tenant", other, "--dry-run", *where)
    assert done.returncode == 2, done.stderr
    named = [t for t in ("clients", "tables", "zones") if f"of table {t}" in done.stderr]
    assert named == ["clients", "tables", "zones"], done.stderr  # every one, not the first alone
    assert "of a row of another tenant or of none" in done.stderr and "nothing was written" in done.stderr
