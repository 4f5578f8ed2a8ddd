"""The storage block: where artifacts go, with the fsspec options to get there."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import Field

from tenant_backup.storage import Storage

__all__ = ["BackupStorage"]


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
