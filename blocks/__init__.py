"""Where things live: the database and the storage, as Prefect blocks or environment variables."""

from blocks.database import TenantDatabase, database_url
from blocks.storage import BackupStorage, open_storage

__all__ = ["BackupStorage", "TenantDatabase", "database_url", "open_storage"]
