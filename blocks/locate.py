"""Where the database, the storage and the age identities that read encrypted backups are: a named
Prefect block, else the ``TENANT_BACKUP_*`` environment variables. Prefect is imported only when a
block is named, so that a command line without a Prefect server never pays for it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tenant_backup.artifact.encryption import identities_in, load_identities
from tenant_backup.db import check_session_capable
from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import get_settings
from tenant_backup.storage import Storage

if TYPE_CHECKING:
    from pyrage import x25519

__all__ = ["database_url", "identities", "open_storage"]


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


def identities() -> list[x25519.Identity]:
    """The age identities at hand to read encrypted backups: ``TENANT_BACKUP_IDENTITIES``, the files of
    ``TENANT_BACKUP_IDENTITY_FILE``, and the Prefect Secret block named by ``TENANT_BACKUP_IDENTITY_BLOCK``
    (its value: the text of an age key file). Called only when an encrypted artifact is read."""
    found = load_identities()
    if name := os.environ.get("TENANT_BACKUP_IDENTITY_BLOCK", "").strip():
        from prefect.blocks.system import Secret

        try:
            block = Secret.load(name)
        except ValueError as exc:
            raise ConfigurationError(
                f"no Secret block named {name!r} (TENANT_BACKUP_IDENTITY_BLOCK) on this Prefect API; create it in "
                "the Prefect UI (Blocks, +, Secret) with the text of the age key file"
            ) from exc
        assert isinstance(block, Secret)
        found += identities_in(str(block.get()), f"Secret block {name!r}")
    return found


def _load(kind: type, name: str, example: str) -> object:
    try:
        return kind.load(name)  # type: ignore[attr-defined]
    except ValueError as exc:
        slug = kind._block_type_slug  # type: ignore[attr-defined]
        raise ConfigurationError(
            f"no {slug} block named {name!r} on this Prefect API; create it in the Prefect UI (Blocks, "
            f"+, {kind._block_type_name}) or in Python with {example}.save({name!r})"  # type: ignore[attr-defined]
        ) from exc
