"""The database block: a PostgreSQL URL kept as a secret."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from tenant_backup.db import check_session_capable

__all__ = ["TenantDatabase"]


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
