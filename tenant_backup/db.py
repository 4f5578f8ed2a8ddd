"""Connections and which database this is.

Every session is pinned to ``TimeZone=UTC``, ``DateStyle=ISO``, ``IntervalStyle=iso_8601`` so
artifacts do not depend on server or role settings, carries a ``lock_timeout``, runs with
``row_security = off`` (as pg_dump does: where row-level security would hide rows from the role,
PostgreSQL raises an error instead of silently returning fewer rows), and checks every
``CLIENT_CHECK_INTERVAL`` that its client is still there (PostgreSQL 14+), so that the session of
a killed process ends, and frees its locks, even while it waits or runs a long statement.
The backup slots, the tenant lock and the shared snapshot are in :mod:`tenant_backup.locks`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from tenant_backup.errors import ConfigurationError, PoolerNotSupportedError
from tenant_backup.segments import encode_segment

__all__ = ["POOLER_HINT", "DatabaseOwner", "check_session_capable", "connect", "read_owner"]

CLIENT_CHECK_INTERVAL = "2s"

TRANSACTION_POOLER_PORT = 6543  # Supabase's transaction pooler (Supavisor / PgBouncer)
POOLER_HINT = (
    "a backup shares one snapshot between several sessions, which a transaction pooler cannot keep: "
    "use the direct connection (db.<project>.supabase.co:5432) or the session pooler "
    "(<pooler host>:5432) instead"
)


def check_session_capable(url: str) -> None:
    """Refuse, before connecting, a URL that is not PostgreSQL's or is malformed, and a transaction
    pooler's, naming the URL to use instead. (A ``key=value`` conninfo string is left to libpq.)"""
    if "://" not in url:
        return
    expected = "expected postgresql://user:password@host:5432/dbname (a password with @ : / # in it is URL-encoded)"
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"{parts.scheme}:// is not a PostgreSQL URL (--db / TENANT_BACKUP_DATABASE_URL); {expected}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"the database URL is not valid ({exc}); {expected}") from exc
    if port == TRANSACTION_POOLER_PORT:
        raise PoolerNotSupportedError(f"the database URL uses port 6543, a transaction pooler; {POOLER_HINT}")


def connect(
    url: str, *, lock_timeout: str = "10s", autocommit: bool = True, application_name: str = "tenant-backup"
) -> psycopg.Connection:
    """Open a session pinned to stable output settings and a lock timeout; ``application_name``
    names it in ``pg_stat_activity`` (and in the messages of whoever waits for its locks)."""
    check_session_capable(url)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name=application_name[:63])
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"cannot connect to the database: {first}; check the URL (--db / TENANT_BACKUP_DATABASE_URL)"
        ) from exc
    pinned = {
        "TimeZone": "UTC",
        "DateStyle": "ISO",
        "IntervalStyle": "iso_8601",
        "lock_timeout": lock_timeout,
        "extra_float_digits": "1",
        "row_security": "off",
    }
    if conn.info.server_version >= 140000:  # the session of a killed client ends within the interval
        pinned["client_connection_check_interval"] = CLIENT_CHECK_INTERVAL
    conn.execute(
        sql.SQL("SELECT {}").format(sql.SQL(", ").join(sql.SQL("set_config(%s, %s, false)") for _ in pinned)),
        [item for pair in pinned.items() for item in pair],
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
