"""Connections, which database this is, the per-tenant lock and the shared snapshot.

Every session is pinned to ``TimeZone=UTC``, ``DateStyle=ISO``, ``IntervalStyle=iso_8601`` so
artifacts do not depend on server or role settings, and carries a ``lock_timeout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.errors import (
    ConfigurationError,
    PoolerNotSupportedError,
    SnapshotError,
    TenantBusyError,
)
from tenant_backup.segments import encode_segment

__all__ = [
    "DatabaseOwner",
    "Snapshot",
    "TenantLock",
    "check_session_capable",
    "connect",
    "import_snapshot",
    "read_owner",
    "tenant_lock",
    "tenant_lock_if_free",
]

TRANSACTION_POOLER_PORT = 6543  # Supabase's transaction pooler (Supavisor / PgBouncer)
_POOLER_HINT = (
    "a backup shares one snapshot between several sessions, which a transaction pooler cannot keep: "
    "use the direct connection (db.<project>.supabase.co:5432) or the session pooler "
    "(<pooler host>:5432) instead"
)


def check_session_capable(url: str) -> None:
    """Refuse a transaction pooler's URL up front, naming the URL to use instead."""
    try:
        port = urlsplit(url).port
    except ValueError as exc:
        raise ConfigurationError(f"database URL is not valid ({exc}); expected postgresql://user@host:5432/db") from exc
    if port == TRANSACTION_POOLER_PORT:
        raise PoolerNotSupportedError(f"the database URL uses port 6543, a transaction pooler; {_POOLER_HINT}")


def connect(url: str, *, lock_timeout: str = "10s", autocommit: bool = True) -> psycopg.Connection:
    """Open a session pinned to stable output settings and a lock timeout."""
    check_session_capable(url)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name="tenant-backup")
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"cannot connect to the database: {first}; check the URL (--db / TENANT_BACKUP_DATABASE_URL)"
        ) from exc
    conn.execute(
        "SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO', false),"
        " set_config('IntervalStyle', 'iso_8601', false), set_config('lock_timeout', %s, false),"
        " set_config('extra_float_digits', '1', false)",
        (lock_timeout,),
    )
    if not autocommit:
        conn.commit()
    return conn


class DatabaseOwner(BaseModel):
    """The database an artifact belongs to: its cluster's system identifier and its name.

    Two databases sharing one storage root (prod and staging, one bucket) differ in one or the
    other, so each keeps to its own prefix. (A physical copy of a cluster keeps its identifier:
    give the copy's database another name.)"""

    model_config = ConfigDict(frozen=True)

    system_identifier: str  # a bigint, as text: JSON readers lose digits beyond 2**53
    name: str

    @property
    def segment(self) -> str:
        """The storage folder of this database's artifacts: ``<encoded name>-<system identifier>``."""
        return f"{encode_segment(self.name, what='database name')}-{self.system_identifier}"


def read_owner(conn: psycopg.Connection) -> DatabaseOwner:
    """Which database ``conn`` is connected to (``pg_control_system()`` is PUBLIC on PostgreSQL 15)."""
    try:
        row = conn.execute("SELECT system_identifier::text, current_database() FROM pg_control_system()").fetchone()
    except pg_errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"the role cannot read the database's system identifier ({exc}); as a superuser run "
            "GRANT EXECUTE ON FUNCTION pg_control_system() TO <role>"
        ) from exc
    assert row is not None
    return DatabaseOwner(system_identifier=row[0], name=row[1])


def _lock_key(tenant_id: str) -> tuple[str, str]:
    return ("tenant-backup", tenant_id)


@dataclass(frozen=True)
class Snapshot:
    """An exported snapshot: its id for ``SET TRANSACTION SNAPSHOT``, and when it was taken."""

    snapshot_id: str
    taken_at: datetime
    server_version: str


class TenantLock:
    """A session holding the tenant's advisory lock; it can also export the shared snapshot.

    Backups and restores of one tenant take the same lock, so they never interleave.
    """

    def __init__(self, conn: psycopg.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    @contextmanager
    def snapshot(self, schema: str, tables: list[str]) -> Iterator[Snapshot]:
        """Open a REPEATABLE READ, READ ONLY transaction, lock ``tables`` in ACCESS SHARE mode
        (no concurrent DROP or ALTER, as pg_dump does), export its snapshot, and keep it open
        until the block ends."""
        conn = self.conn
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            try:
                if tables:
                    conn.execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                            sql.SQL(", ").join(
                                sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(t)) for t in tables
                            )
                        )
                    )
                row = conn.execute("SELECT pg_export_snapshot(), now(), current_setting('server_version')").fetchone()
            except pg_errors.LockNotAvailable as exc:
                raise TenantBusyError(
                    f"tables of tenant {self.tenant_id} are locked by another session (an ALTER or a "
                    "restore?); retry later or raise lock_timeout",
                    tenant_id=self.tenant_id,
                ) from exc
            assert row is not None
            yield Snapshot(snapshot_id=row[0], taken_at=row[1], server_version=row[2])
        except BaseException:
            with suppress(psycopg.Error):  # the error that got us here is the one to report
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("ROLLBACK")
        except psycopg.OperationalError as exc:
            # The session that held the snapshot and the tenant lock is gone: another backup or a
            # restore may already have started, so nothing read through it is trusted.
            raise SnapshotError(
                f"the session holding tenant {self.tenant_id}'s snapshot and lock was lost ({exc}); "
                "the backup is abandoned: run it again",
                tenant_id=self.tenant_id,
            ) from exc


@contextmanager
def tenant_lock(url: str, tenant_id: str, *, lock_timeout: str = "10s") -> Iterator[TenantLock]:
    """Hold the tenant's session-level advisory lock for the block (waits up to lock_timeout)."""
    conn = connect(url, lock_timeout=lock_timeout)
    try:
        try:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", _lock_key(tenant_id))
        except pg_errors.LockNotAvailable as exc:
            raise TenantBusyError(
                f"another backup or restore of tenant {tenant_id} is running (its lock was not free "
                f"within lock_timeout={lock_timeout}); wait for it to finish, then run again",
                tenant_id=tenant_id,
            ) from exc
        yield TenantLock(conn, tenant_id)
    finally:
        conn.close()  # closing the session releases the lock


@contextmanager
def tenant_lock_if_free(conn: psycopg.Connection, tenant_id: str) -> Iterator[bool]:
    """Take the tenant's lock on ``conn`` if no run holds it, without waiting; yields whether it
    was taken, and releases it when the block ends. Holding it proves that no backup or restore of
    the tenant is running: each holds this lock from start to end."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", _lock_key(tenant_id)).fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", _lock_key(tenant_id))


def import_snapshot(conn: psycopg.Connection, snapshot_id: str, tenant_id: str) -> None:
    """Start a REPEATABLE READ, READ ONLY transaction that sees exactly ``snapshot_id``."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        # SET TRANSACTION SNAPSHOT takes no bind parameters: the id goes in as a quoted literal.
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
    except (pg_errors.InvalidParameterValue, pg_errors.ObjectNotInPrerequisiteState) as exc:
        conn.execute("ROLLBACK")
        raise SnapshotError(
            f"cannot import snapshot {snapshot_id} for tenant {tenant_id} ({exc}); this happens behind "
            f"a transaction pooler or when the coordinating session ended: {_POOLER_HINT}",
            tenant_id=tenant_id,
        ) from exc
