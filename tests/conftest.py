"""Real parts for the tests: PostgreSQL, an S3 API server on loopback, a Prefect API.

PostgreSQL: ``TEST_DATABASE_URL`` when set, else 127.0.0.1:5432 (user postgres), else an
embedded server (pgserver). Every test module gets a database of its own, dropped after; no
other database is touched.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before Prefect is imported anywhere: a private home, no telemetry, quiet logs.
_PREFECT_HOME = tempfile.mkdtemp(prefix="tb-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("TENANT_BACKUP_THROTTLE_SECONDS", "300")

import psycopg
import pytest
from psycopg import sql

from tenant_backup.demo.generate import DemoTenant, load_demo


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (where CREATE DATABASE runs)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _reachable(local):
        yield local
        return
    import pgserver  # embedded PostgreSQL, only when no server is at hand

    folder = Path(tempfile.mkdtemp(prefix="tb-pgserver-"))
    server = pgserver.get_server(folder, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def _with_dbname(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Database:
    """A fresh database created for one test module."""

    def __init__(self, server: str, name: str) -> None:
        self.server = server
        self.name = name
        self.url = _with_dbname(server, name)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)


def make_database(server: str, prefix: str = "tb_test") -> Database:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return Database(server, name)


def drop_database(db: Database) -> None:
    with psycopg.connect(db.server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


@contextmanager
def database_with(server: str, schema: str) -> Iterator[Database]:
    """A fresh database holding ``schema`` (SQL), dropped after."""
    db = make_database(server)
    try:
        with db.connect() as conn:
            conn.execute(schema)
        yield db
    finally:
        drop_database(db)


@pytest.fixture(scope="module")
def database(pg_server: str) -> Iterator[Database]:
    db = make_database(pg_server)
    try:
        yield db
    finally:
        drop_database(db)


class DemoDatabase(Database):
    tenants: list[DemoTenant]
    schema: str


def _demo(pg_server: str, schema: str, tenants: int = 3, rows: int = 400) -> Iterator[DemoDatabase]:
    db = make_database(pg_server)
    demo = DemoDatabase(db.server, db.name)
    demo.schema = schema
    try:
        with demo.connect() as conn:
            demo.tenants = load_demo(conn, schema, tenants, rows)  # type: ignore[arg-type]
        yield demo
    finally:
        drop_database(db)


@pytest.fixture(scope="module")
def pos_db(pg_server: str) -> Iterator[DemoDatabase]:
    """The POS schema (seed 000) with 3 tenants of ~400 rows."""
    yield from _demo(pg_server, "pos")


@pytest.fixture(scope="module")
def crm_db(pg_server: str) -> Iterator[DemoDatabase]:
    """The CRM schema (seed 001) with 3 tenants of ~400 rows."""
    yield from _demo(pg_server, "crm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto's server mode) on loopback."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10},
    }


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> tuple[str, dict[str, Any]]:
    """A new bucket: its ``s3://`` root URL and the fsspec options to reach it."""
    import boto3

    name = f"tb-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return f"s3://{name}/backups", s3_options(s3_endpoint)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect API server for the whole session, run heartbeats off. Yields its URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Where the flow finds things: TENANT_BACKUP_* variables, as blocks/ reads them."""
    import json

    store = f"file://{tmp_path / 'store'}"

    def use(db: DemoDatabase, storage: str = store, options: dict[str, Any] | None = None) -> None:
        monkeypatch.setenv("TENANT_BACKUP_DATABASE_URL", db.url)
        monkeypatch.setenv("TENANT_BACKUP_STORAGE_URL", storage)
        monkeypatch.setenv("TENANT_BACKUP_STORAGE_OPTIONS", json.dumps(options or {}))
        state.update(db=db, storage=storage, options=options or {})

    state: dict[str, Any] = {"use": use, "store": store}
    yield state
