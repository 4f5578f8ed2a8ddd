"""Where the database and the storage are: a named Prefect block, else the ``TENANT_BACKUP_*``
environment variables. Prefect is imported only when a block is named, so that a command line
without a Prefect server never pays for it."""

from __future__ import annotations

from tenant_backup.db import check_session_capable
from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import get_settings
from tenant_backup.storage import Storage

__all__ = ["database_url", "open_storage"]


def database_url(block_name: str | None = None) -> str:
    """The URL from the named ``tenant-backup-database`` block, else ``TENANT_BACKUP_DATABASE_URL``."""
    if block_name:
        from blocks.database import TenantDatabase

        block = _load(TenantDatabase, block_name, "TenantDatabase(url=...)")
        assert isinstance(block, TenantDatabase)
        return block.get_url()
    url = get_settings().database_url
    if not url:
        raise ConfigurationError(
            "no database given: pass --db URL, set TENANT_BACKUP_DATABASE_URL, or name a tenant-backup-database block"
        )
    check_session_capable(url)
    return url


def open_storage(block_name: str | None = None) -> Storage:
    """The storage of the named ``tenant-backup-storage`` block, else ``TENANT_BACKUP_STORAGE_URL``
    and ``TENANT_BACKUP_STORAGE_OPTIONS``."""
    if block_name:
        from blocks.storage import BackupStorage

        block = _load(BackupStorage, block_name, "BackupStorage(url=...)")
        assert isinstance(block, BackupStorage)
        return block.get_storage()
    settings = get_settings()
    if not settings.storage_url:
        raise ConfigurationError(
            "no storage given: pass --storage URL, set TENANT_BACKUP_STORAGE_URL, or name a tenant-backup-storage block"
        )
    return Storage(settings.storage_url, settings.storage_options)


def _load(kind: type, name: str, example: str) -> object:
    try:
        return kind.load(name)  # type: ignore[attr-defined]
    except ValueError as exc:
        slug = kind._block_type_slug  # type: ignore[attr-defined]
        raise ConfigurationError(
            f"no {slug} block named {name!r} on this Prefect API; create it in the Prefect UI (Blocks, "
            f"+, {kind._block_type_name}) or in Python with {example}.save({name!r})"  # type: ignore[attr-defined]
        ) from exc
