"""The storage block: where artifacts go, with the fsspec options to get there."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import Field

from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import get_settings
from tenant_backup.storage import Storage

__all__ = ["BackupStorage", "open_storage"]


class BackupStorage(Block):
    """An object store root for backup artifacts: ``s3://bucket/prefix``, ``file:///dir``, ..."""

    _block_type_name = "Tenant Backup Storage"
    _block_type_slug = "tenant-backup-storage"
    _description = "Storage URL for backup artifacts and its fsspec options (credentials kept secret)."

    url: str = Field(description="s3://bucket/prefix, file:///absolute/dir, or any fsspec URL.")
    options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description='fsspec options, e.g. {"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}.',
    )

    def get_storage(self) -> Storage:
        options: dict[str, Any] = self.options.get_secret_value()
        return Storage(self.url, options)


def open_storage(block_name: str | None = None) -> Storage:
    """The storage of the named block, else ``TENANT_BACKUP_STORAGE_URL`` / ``_STORAGE_OPTIONS``."""
    if block_name:
        try:
            block = BackupStorage.load(block_name)
        except ValueError as exc:
            raise ConfigurationError(
                f"no {BackupStorage._block_type_slug} block named {block_name!r}; create it in the Prefect UI "
                "or with BackupStorage(url=...).save(name)"
            ) from exc
        assert isinstance(block, BackupStorage)
        return block.get_storage()
    settings = get_settings()
    if not settings.storage_url:
        raise ConfigurationError(
            "no storage given: set TENANT_BACKUP_STORAGE_URL, pass --storage, or name a tenant-backup-storage block"
        )
    return Storage(settings.storage_url, settings.storage_options)
