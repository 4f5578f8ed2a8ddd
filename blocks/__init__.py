"""Where things live: the database and the storage, as Prefect blocks or environment variables.

``database_url`` and ``open_storage`` import Prefect only when a block is named; the block types
themselves (``TenantDatabase``, ``BackupStorage``) load on first use, so that ``prefect block
register -m blocks`` finds them and a command line without a Prefect server does not pay for them.
"""

from __future__ import annotations

from typing import Any

from blocks.locate import database_url, identities, open_storage

__all__ = ["BackupStorage", "TenantDatabase", "database_url", "identities", "open_storage"]

_BLOCKS = {"TenantDatabase": "blocks.database", "BackupStorage": "blocks.storage"}


def __getattr__(name: str) -> Any:
    if name in _BLOCKS:
        import importlib

        return getattr(importlib.import_module(_BLOCKS[name]), name)
    raise AttributeError(f"module 'blocks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_BLOCKS])
