"""Fetching and verifying an artifact before anything is restored from it.

The artifact is downloaded to a local spool file while its sha256 is computed and compared with
the ledger's checksum; then the manifest's format and version are checked and every table's CSV
is re-hashed against the manifest. Only an artifact that passes all of it is opened for restore.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from tenant_backup.errors import VerificationError
from tenant_backup.manifest import ARTIFACT_VERSION, Manifest
from tenant_backup.storage import Storage

__all__ = ["Artifact", "fetch_artifact"]

_CHUNK = 1 << 20


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 1 << 30  # unparseable: treat as newer than anything we know


class Artifact:
    """A verified artifact in a local file: its manifest and its tables' CSV streams."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @contextmanager
    def open_table(self, table: str) -> Iterator[BinaryIO]:
        """The CSV of ``table`` (with its header row), decompressed as it is read."""
        with zipfile.ZipFile(self.path) as archive, archive.open(self.manifest.tables[table].file) as fh:
            yield fh  # type: ignore[misc]


def fetch_artifact(
    storage: Storage, storage_path: str, checksum: str | None, dest: Path, *, backup_id: str
) -> Artifact:
    """Download ``storage_path`` into ``dest`` and verify it whole. Raises VerificationError."""
    digest = hashlib.sha256()
    key = storage.key_of(storage_path)
    with storage.open_read(key) as source, dest.open("wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    actual = f"sha256:{digest.hexdigest()}"
    if checksum is None or actual != checksum:
        raise VerificationError(
            f"artifact {storage_path} does not match the ledger's checksum (ledger {checksum}, artifact {actual}): "
            "it was altered or truncated; restore another backup",
            backup_id=backup_id,
        )
    return open_verified(dest, backup_id=backup_id)


def open_verified(path: Path, *, backup_id: str) -> Artifact:
    """Check the manifest's format and version and every table's sha256."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise VerificationError(f"backup {backup_id} is not a readable ZIP ({exc})", backup_id=backup_id) from exc
    with archive:
        try:
            raw = json.loads(archive.read("manifest.json"))
        except (KeyError, ValueError) as exc:
            raise VerificationError(
                f"backup {backup_id} has no readable manifest.json ({exc})", backup_id=backup_id
            ) from exc
        if not isinstance(raw, dict) or raw.get("format") != "tenant-backup":
            raise VerificationError(f"backup {backup_id} is not a tenant-backup artifact", backup_id=backup_id)
        version = str(raw.get("version", ""))
        if _major(version) > _major(ARTIFACT_VERSION):
            raise VerificationError(
                f"backup {backup_id} was written by artifact version {version}, newer than this tool's "
                f"{ARTIFACT_VERSION}: upgrade tenant-backup to restore it",
                backup_id=backup_id,
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise VerificationError(f"backup {backup_id} has an invalid manifest: {exc}", backup_id=backup_id) from exc
        for table, entry in manifest.tables.items():
            digest = hashlib.sha256()
            try:
                with archive.open(entry.file) as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise VerificationError(
                    f"table {table} of backup {backup_id} cannot be read ({exc})", backup_id=backup_id, table=table
                ) from exc
            if digest.hexdigest() != entry.sha256:
                raise VerificationError(
                    f"table {table} of backup {backup_id} does not match its sha256 in the manifest",
                    backup_id=backup_id,
                    table=table,
                )
    return Artifact(path, manifest)
