"""Reading artifacts back, for assertions."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from tenant_backup.artifact.formats import BOM, copy_statement
from tenant_backup.storage import Storage
from tenant_backup.tenancy.catalog import TableScope, read_catalog
from tenant_backup.tenancy.profiles import Profile, load_profile
from tenant_backup.tenancy.scope import plan_scope


def tenant_folder(db_url: str, tenant_id: str) -> str:
    """``<db segment>/<tenant segment>``: where the backups of ``tenant_id`` of that database go."""
    from tenant_backup.backup.assemble import tenant_prefix
    from tenant_backup.db import read_owner

    with psycopg.connect(db_url) as conn:
        return tenant_prefix(read_owner(conn), tenant_id)


def read_artifact(storage_url: str, storage_path: str, options: dict[str, Any] | None = None) -> zipfile.ZipFile:
    storage = Storage(storage_url, options)
    with storage.open_read(storage.key_of(storage_path)) as fh:
        return zipfile.ZipFile(io.BytesIO(fh.read()))


def manifest_of(archive: zipfile.ZipFile) -> dict[str, Any]:
    return json.loads(archive.read("manifest.json"))  # type: ignore[no-any-return]


def rows_of(archive: zipfile.ZipFile, table: str) -> list[dict[str, str]]:
    text = archive.read(f"{table}.csv").decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def scopes(conn: psycopg.Connection, profile: str | Profile) -> dict[str, TableScope]:
    """Every table of a shipped profile (by name) or of a discovered one."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    catalog = read_catalog(conn, prof.db_schema, prof.schemas)
    tables = prof.tables_for(None) if prof.categories else None
    return {s.table: s for s in plan_scope(catalog, prof, tables)}


def tenant_csv(conn: psycopg.Connection, scope: TableScope, tenant_id: str) -> bytes:
    """The tenant's rows of one table as the artifact's CSV file holds them, straight from the database."""
    out = bytearray(BOM)
    with conn.cursor() as cur, cur.copy(copy_statement(scope, "csv"), {"tenant": tenant_id}) as copy:
        for chunk in copy:
            out += chunk
    return bytes(out)


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def state_of(url: str, profile: str | Profile, tenant_id: str) -> dict[str, bytes]:
    """Every table's rows of the tenant, all columns, ordered by key, as COPY prints them."""
    from tenant_backup.db import connect as pinned
    from tenant_backup.tenancy.filters import tenant_filter

    out: dict[str, bytes] = {}
    with pinned(url) as conn:
        for table, scope in scopes(conn, profile).items():
            # By key; a table without one by its rows' text (duplicates stay side by side).
            keys = [sql.Identifier(k) for k in scope.primary_key]
            order = sql.SQL(", ").join(keys) if keys else sql.SQL("t::text")
            query = sql.SQL("COPY (SELECT * FROM {} t WHERE {} ORDER BY {}) TO STDOUT").format(
                scope.ident(), tenant_filter(scope), order
            )
            data = bytearray()
            with conn.cursor() as cur, cur.copy(query, {"tenant": tenant_id}) as copy:
                for chunk in copy:
                    data += chunk
            out[table] = bytes(data)
    return out


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    """Poll ``check()`` until it returns something true (HTTP and OS errors count as not yet)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def terminate_lock_holders(url: str) -> None:
    """Kill the sessions holding an advisory lock in this database: a backup's coordinator or a
    restore's transaction (the tenant lock), as a lost connection would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """Terminate processes, killing those that do not stop within 20 s."""
    for proc in procs:
        if proc is None:
            continue
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def prefect_server(**extra_env: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A `prefect server start` process on loopback with a home of its own; yields its API URL and
    the environment that reaches it (no TENANT_BACKUP_* or other PREFECT_* leaks in)."""
    from tests.conftest import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TENANT_BACKUP_"))},
        "PREFECT_HOME": tempfile.mkdtemp(prefix="tb-e2e-prefect-"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        **extra_env,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("the Prefect server", lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200)
        yield api, env
    finally:
        stop(server)


APP_ROLE_GRANTS = (
    "GRANT USAGE, CREATE ON SCHEMA public, tenant_backup TO {r}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, tenant_backup TO {r}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
    "GRANT TEMPORARY ON DATABASE {d} TO {r}",
)


def grant_app_role(conn: psycopg.Connection, role: str) -> None:
    """What an app's own role has on its database: DML on the app's tables and the ledger, and
    temporary tables; not superuser, so it cannot skip triggers (session_replication_role)."""
    for statement in APP_ROLE_GRANTS:
        conn.execute(sql.SQL(statement).format(r=sql.Identifier(role), d=sql.Identifier(conn.info.dbname)))


def url_as(url: str, role: str) -> str:
    """``url`` with ``role`` as its user (trust authentication: no password)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.split('@')[-1]}"))
