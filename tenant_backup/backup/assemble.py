"""Assemble extracted table parts into one artifact and write it to storage.

The parts are already compressed (see :mod:`tenant_backup.artifact.codecs`), so assembling copies bytes:
a CSV ZIP gets one entry per table and ``manifest.json``; a JSON or SQL artifact is the header,
the parts and the footer, each its own gzip member / zstd frame.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel

from tenant_backup.artifact.codecs import compressor, suffix
from tenant_backup.artifact.documents import json_footer, json_header
from tenant_backup.artifact.encryption import Encrypting
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.artifact.script import sql_footer, sql_header
from tenant_backup.artifact.zipwriter import Writer, ZipStreamWriter
from tenant_backup.backup.extract import TablePart
from tenant_backup.db import DatabaseOwner
from tenant_backup.errors import ConfigurationError
from tenant_backup.segments import encode_segment, entry_name
from tenant_backup.storage import Storage, is_partial
from tenant_backup.tenancy.catalog import ForeignKey, TableScope

__all__ = ["ArtifactInfo", "artifact_key", "prepare_storage", "tenant_prefix", "write_artifact"]

_CHUNK = 1 << 20


class ArtifactInfo(BaseModel):
    """Where the artifact went, how big it is, the sha256 of its stored bytes (the ledger's
    checksum), and the age recipients it is encrypted to (none: plain)."""

    storage_path: str
    key: str
    size: int
    checksum: str
    encrypted_to: list[str] = []


class _Stored:
    """The stream of stored bytes: their sha256 and size, as they go to storage."""

    def __init__(self, out: Writer) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:  # pyrage flushes its writer
        pass


def tenant_prefix(database: DatabaseOwner, tenant_id: str) -> str:
    """``<db segment>/<tenant segment>``: the folder of one tenant's artifacts of one database. The
    tenant id is encoded into exactly one segment, so no id reaches outside it or into another's."""
    return f"{database.segment}/{encode_segment(tenant_id)}"


def artifact_key(
    database: DatabaseOwner, tenant_id: str, backup_id: str, taken_at: datetime, suffix: str = "zip"
) -> str:
    """``<db segment>/<tenant segment>/<UTC time>-<backup id>.<suffix>``: sorted by time within the
    tenant's folder."""
    return f"{tenant_prefix(database, tenant_id)}/{taken_at:%Y%m%dT%H%M%SZ}-{backup_id}.{suffix}"


def prepare_storage(storage: Storage, database: DatabaseOwner, tenant_id: str) -> list[str]:
    """Fail early when the storage cannot be reached, then remove what killed runs left in the
    tenant's folder (``.partial`` objects, S3 multipart uploads); returns their keys. The caller
    holds the tenant lock, so no live writer of the tenant exists."""
    storage.check()
    prefix = tenant_prefix(database, tenant_id)
    removed = [key for key in storage.list(prefix) if is_partial(key)]
    for key in removed:
        storage.remove(key)
    for upload in storage.uploads(prefix):
        storage.abort_upload(upload)
        removed.append(upload.key)
    return removed


def write_artifact(
    storage: Storage,
    manifest: Manifest,
    parts: list[TablePart],
    scopes: list[TableScope],
    name_key: str,
    foreign_keys: list[ForeignKey] | None = None,
    encrypt_to: list[str] | None = None,
) -> ArtifactInfo:
    """Write the artifact atomically (temporary key, then moved); ``parts`` in ``manifest.table_order``.
    With ``encrypt_to``, the artifact is an age file to those recipients (``….zip.age``)."""
    if manifest.database is None:
        raise ConfigurationError(
            f"the manifest of backup {manifest.backup_id} names no database; plan the backup again",
            tenant_id=manifest.tenant_id,
        )
    key = artifact_key(
        manifest.database,
        manifest.tenant_id,
        manifest.backup_id,
        manifest.date,
        suffix(manifest.artifact_format, manifest.compression) + (".age" if encrypt_to else ""),
    )
    by_name = {p.table: p for p in parts}
    ordered = [by_name[name] for name in manifest.table_order]

    def body(out: Writer) -> None:
        if manifest.artifact_format == "csv":
            _write_zip(out, manifest, ordered)
        else:
            _write_stream(out, manifest, ordered, scopes, name_key, foreign_keys or [])

    with storage.write_atomic(key) as out:
        stored = _Stored(out)
        if encrypt_to:
            with Encrypting(stored, encrypt_to) as plain:
                body(plain)
        else:
            body(stored)
    return ArtifactInfo(
        storage_path=storage.full_url(key),
        key=key,
        size=stored.size,
        checksum=f"sha256:{stored.digest.hexdigest()}",
        encrypted_to=list(encrypt_to or []),
    )


def _write_zip(out: Writer, manifest: Manifest, parts: list[TablePart]) -> None:
    """``<table>.csv`` entries (already compressed) then ``manifest.json``."""
    writer = ZipStreamWriter(out, modified=manifest.date)
    for part in parts:
        with open(part.path, "rb") as source:
            writer.add_precompressed(
                manifest.tables[part.table].file or f"{entry_name(part.table)}.csv",
                source,
                crc32=part.crc32,
                compressed_size=part.compressed_size,
                size=part.size,
                stored=manifest.compression == "none",
            )
        keys = manifest.tables[part.table].keys_file
        if keys and part.key_state and part.key_state.keys_path:  # an incremental's changed key buckets (small)
            with open(part.key_state.keys_path, "rb") as source:
                writer.add_bytes(keys, source.read())
    writer.add_bytes("manifest.json", manifest.model_dump_json(indent=2).encode("utf-8"))
    writer.close()


def _write_stream(
    out: Writer,
    manifest: Manifest,
    parts: list[TablePart],
    scopes: list[TableScope],
    name_key: str,
    foreign_keys: list[ForeignKey],
) -> None:
    put = out.write

    def member(text: bytes) -> None:
        pack = compressor(manifest.compression, manifest.compression_level, "stream")
        put(pack.compress(text) + pack.flush())

    by_name = {s.table: s for s in scopes}
    order = [by_name[p.table] for p in parts]
    if manifest.artifact_format == "json":
        member(json_header(manifest, name_key))
    else:
        member(sql_header(manifest, order))
    for i, part in enumerate(parts):
        with open(part.path, "rb") as source:
            while chunk := source.read(_CHUNK):
                put(chunk)
        if manifest.artifact_format == "json":
            member(b",\n" if i < len(parts) - 1 else b"\n")
    if manifest.artifact_format == "json":
        member(json_footer(manifest, manifest.table_order))
    else:
        member(sql_footer(manifest, order, foreign_keys))
