"""Assemble extracted table parts into one CSV ZIP artifact and write it to storage."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from tenant_backup.extract import TablePart
from tenant_backup.manifest import Manifest
from tenant_backup.storage import Storage
from tenant_backup.zipwriter import ZipStreamWriter

__all__ = ["ArtifactInfo", "artifact_key", "write_csv_zip"]


class ArtifactInfo(BaseModel):
    """Where the artifact went, how big it is, and its sha256 (the ledger's checksum)."""

    storage_path: str
    key: str
    size: int
    checksum: str


def artifact_key(tenant_id: str, backup_id: str, taken_at: datetime, suffix: str = "zip") -> str:
    """``<tenant>/<UTC time>-<backup id>.<suffix>``: sorted by time within the tenant's prefix."""
    return f"{tenant_id}/{taken_at:%Y%m%dT%H%M%SZ}-{backup_id}.{suffix}"


def write_csv_zip(storage: Storage, key: str, manifest: Manifest, parts: list[TablePart]) -> ArtifactInfo:
    """Write ``<table>.csv`` entries (already compressed) then ``manifest.json``, atomically."""
    with storage.write_atomic(key) as out:
        writer = ZipStreamWriter(out, modified=manifest.date)
        for part in parts:
            with open(part.path, "rb") as source:
                writer.add_precompressed(
                    manifest.tables[part.table].file,
                    source,
                    crc32=part.crc32,
                    compressed_size=part.compressed_size,
                    size=part.size,
                )
        writer.add_bytes("manifest.json", manifest.model_dump_json(indent=2).encode("utf-8"))
        writer.close()
    return ArtifactInfo(
        storage_path=storage.full_url(key), key=key, size=writer.size, checksum=f"sha256:{writer.sha256}"
    )
