"""The artifact's ``manifest.json``: what was backed up, from where, and how to check it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tenant_backup.artifact.codecs import Compression
from tenant_backup.artifact.formats import ArtifactFormat
from tenant_backup.db import DatabaseOwner
from tenant_backup.tenancy.catalog import ColumnInfo

__all__ = ["ARTIFACT_VERSION", "INCREMENTAL_VERSION", "Manifest", "TableManifest"]

# Bumped on any change a reader must know about; a reader refuses a newer major version.
# 1.1: json and sql formats, codecs; 1.2: the database an artifact belongs to, and a SQL artifact
# that stages its rows and replays only the difference; 1.3: key digests of a chain's base;
# 2.0: incremental backups (a reader that knows no chains must not take one for a whole tenant)
ARTIFACT_VERSION = "1.3.0"
INCREMENTAL_VERSION = "2.0.0"


class TableManifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: str | None = Field(
        None, description="Entry name in a CSV ZIP: <table>.csv, the table's name encoded when it could read as a path."
    )
    rows: int
    size: int = Field(description="Bytes of the table's data (CSV file, JSON rows, COPY rows).")
    compressed_size: int
    sha256: str = Field(description="sha256 of those bytes, hex.")
    newlines: int | None = Field(
        None, description="Newlines in a CSV table: rows + 1 (the header) unless values hold newlines."
    )
    columns: list[ColumnInfo] = Field(
        description="Every column with its PostgreSQL type; generated ones flagged (not in the artifact)."
    )
    primary_key: list[str]
    scope: str = Field(
        description="How the tenant's rows were selected, e.g. lignes_vente.vente_id -> ventes.etablissement_id."
    )
    content: Literal["rows", "changes"] = Field(
        "rows", description="rows: all the tenant's rows; changes: those written since the parent backup."
    )
    state_rows: int | None = Field(None, description="With changes: the tenant's rows of the table at the snapshot.")
    buckets: int | None = Field(None, description="Buckets of the key digests (a table compared by key).")
    key_columns: list[str] | None = Field(None, description="The key the digests hash (a chain's tables).")
    key_digest: str | None = Field(
        None, description="<count>:<XOR of the key hashes, hex> of the tenant's keys at the snapshot."
    )
    keys_file: str | None = Field(
        None, description="With changes: entry of the changed buckets and the hashes of their keys now."
    )
    keys_sha256: str | None = None
    keys_size: int = 0

    @property
    def total(self) -> int:
        """The tenant's rows of the table at the snapshot."""
        return self.rows if self.state_rows is None else self.state_rows


class Manifest(BaseModel):
    """Seed 000's backup document fields, plus what a verified restore needs."""

    model_config = ConfigDict(frozen=True)

    format: Literal["tenant-backup"] = "tenant-backup"
    version: str = ARTIFACT_VERSION
    backup_id: str
    date: datetime = Field(description="Snapshot time (UTC): the data is as of this instant.")
    database: DatabaseOwner | None = Field(
        None, description="The database backed up (system identifier and name); absent before version 1.2."
    )
    tenant_id: str
    tenant_column: str
    tenant_name: str | None
    profile: str
    profile_doc: dict[str, Any] = Field(default_factory=dict, description="The profile used, whole.")
    db_schema: str
    type: Literal["full", "partial"]
    categories: list[str]
    artifact_format: ArtifactFormat = "csv"
    compression: Compression = "deflate"
    compression_level: int = 1
    table_order: list[str] = Field(default_factory=list, description="Tables as stored, parents first for SQL.")
    tables: dict[str, TableManifest]
    total_records: int
    tables_count: int
    size_bytes: int = Field(description="Bytes of table data over all tables, uncompressed.")
    schema_fingerprint: str
    server_version: str
    tool_version: str
    left_out: list[str] = Field(
        default_factory=list, description="Tables holding the tenant column that this backup does not hold."
    )
    kind: Literal["full", "incremental"] = "full"
    parent_id: str | None = Field(None, description="An incremental's parent: it holds the changes since.")
    base_id: str | None = Field(None, description="The full backup an incremental's chain starts with.")
    chain_seed: int | None = Field(None, description="Seed of the key hashes of the chain.")
