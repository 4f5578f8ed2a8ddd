"""The database block: a PostgreSQL URL kept as a secret."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tenant_backup.db import check_session_capable
from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import get_settings

__all__ = ["TenantDatabase", "database_url"]


class TenantDatabase(Block):
    """A multi-tenant PostgreSQL / Supabase database to back up and restore.

    Use the direct connection or the session pooler (port 5432): a backup shares one snapshot
    between several sessions, which a transaction pooler (port 6543) cannot keep.
    """

    _block_type_name = "Tenant Backup Database"
    _block_type_slug = "tenant-backup-database"
    _description = "PostgreSQL URL of a multi-tenant app's database (kept secret)."

    url: SecretStr = Field(
        description="postgresql://user:password@host:5432/dbname (direct connection or session pooler)."
    )

    def get_url(self) -> str:
        url = self.url.get_secret_value()
        check_session_capable(url)
        return url


def database_url(block_name: str | None = None) -> str:
    """The URL from the named block, else from ``TENANT_BACKUP_DATABASE_URL``."""
    if block_name:
        try:
            block = TenantDatabase.load(block_name)
        except ValueError as exc:
            raise ConfigurationError(
                f"no {TenantDatabase._block_type_slug} block named {block_name!r}; create it in the Prefect UI "
                "or with TenantDatabase(url=...).save(name)"
            ) from exc
        assert isinstance(block, TenantDatabase)
        return block.get_url()
    url = get_settings().database_url
    if not url:
        raise ConfigurationError(
            "no database given: set TENANT_BACKUP_DATABASE_URL, pass --db, or name a tenant-backup-database block"
        )
    return url
