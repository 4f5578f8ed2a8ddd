"""A backup's tables as pandas DataFrames, without a database.

    >>> from tenant_backup.artifact.dataframes import open_backup
    >>> backup = open_backup("s3://bucket/backups/<tenant>/<time>-<id>.zip", storage_options={...})
    >>> backup.tables                      # {'ventes': 1200, …}: rows per table
    >>> backup.table("ventes").dtypes

Any format opens the same way. Every table's sha256 is checked against the artifact's manifest
first, or, when the whole file matched the ledger's checksum (``tenant-backup show`` gives it),
a CSV ZIP's table as it is read.
Columns get pandas dtypes from their PostgreSQL types: integers ``Int16/32/64`` and floats
``Float32/64`` (nullable; NaN and ±inf kept), booleans ``boolean``, ``timestamp``/``date`` as
``datetime64`` (``timestamptz`` in UTC), ``numeric`` as exact ``Decimal`` objects, json/jsonb
parsed, bytea as ``bytes``, the rest (text, uuid, enums, intervals, ranges, arrays…) as
``string`` in PostgreSQL's text form. A column whose values pandas cannot hold (``infinity``
dates, years past 2262 in some units) stays ``string``, never altered.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tenant_backup.artifact.encryption import IdentitySource, load_identities
from tenant_backup.artifact.formats import base_type
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.artifact.reader import Artifact, open_verified
from tenant_backup.artifact.rows import copy_text_fields
from tenant_backup.errors import ConfigurationError, VerificationError
from tenant_backup.storage import Storage
from tenant_backup.tenancy.catalog import ColumnInfo

if TYPE_CHECKING:
    import pandas as pd

# numpy, pandas and pyarrow are imported where a table is read: opening a backup and its
# manifest (``tenant-backup show``) does not pay for them.
__all__ = ["Backup", "open_backup", "to_frame"]

_BOOL = {"t": True, "f": False}
_FLOATS = {"real": "float32", "double precision": "float64"}
_SCALARS: dict[str, tuple[Callable[[str], Any], str]] = {
    "smallint": (int, "Int16"),
    "integer": (int, "Int32"),
    "bigint": (int, "Int64"),
    "boolean": (_BOOL.__getitem__, "boolean"),
    "numeric": (Decimal, "object"),
    "json": (json.loads, "object"),
    "jsonb": (json.loads, "object"),
    "bytea": (lambda v: bytes.fromhex(v[2:]), "object"),
}


def _series(column: ColumnInfo, values: list[str | None]) -> pd.Series:
    import numpy as np
    import pandas as pd

    name = column.name
    kind = "array" if column.type.endswith("[]") else base_type(column)
    if kind in _FLOATS:  # built by hand so that NaN stays NaN and only NULL becomes <NA>
        mask = np.array([v is None for v in values], dtype=bool)
        data = np.array([0.0 if v is None else float(v) for v in values], dtype=_FLOATS[kind])
        return pd.Series(pd.arrays.FloatingArray(data, mask=mask), name=name)
    if kind in _SCALARS:
        parse, dtype = _SCALARS[kind]
        return pd.Series([None if v is None else parse(v) for v in values], name=name, dtype=dtype)
    if kind in ("timestamp without time zone", "timestamp with time zone", "date"):
        try:
            return pd.Series(
                pd.to_datetime(values, format="ISO8601", utc=kind == "timestamp with time zone"), name=name
            )
        except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
            pass  # infinity, BC or far-future values: keep the text
    return pd.Series(values, name=name, dtype="string")


def to_frame(manifest: Manifest, table: str, columns: dict[str, list[str | None]]) -> pd.DataFrame:
    """Typed DataFrame of one table from its values in PostgreSQL's text form."""
    import pandas as pd

    info = {c.name: c for c in manifest.tables[table].columns}
    return pd.DataFrame({name: _series(info[name], values) for name, values in columns.items()})


class Backup:
    """An opened, verified backup: its manifest and its tables."""

    def __init__(self, artifact: Artifact, workdir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.artifact = artifact
        self.manifest = artifact.manifest
        self._workdir = workdir  # removed with this object

    @property
    def tables(self) -> dict[str, int]:
        return {name: t.rows for name, t in self.manifest.tables.items()}

    def table(self, name: str, head: int | None = None) -> pd.DataFrame:
        """One table (its first ``head`` rows) as a typed DataFrame."""
        if name not in self.manifest.tables:
            raise ConfigurationError(
                f"backup {self.manifest.backup_id} has no table {name!r}; it has {', '.join(sorted(self.tables))}",
                backup_id=self.manifest.backup_id,
                table=name,
            )
        import pyarrow as pa
        import pyarrow.csv as pacsv

        columns = [c.name for c in self.manifest.tables[name].columns if not c.generated]
        values: dict[str, list[str | None]] = {c: [] for c in columns}
        with self.artifact.open_table(name) as fh:
            if self.artifact.copy_format == "csv":
                reader = pacsv.open_csv(
                    fh,
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=dict.fromkeys(columns, pa.string()),
                        null_values=[""],  # COPY's NULL; pyarrow's default list also takes NaN, NULL…
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
                for batch in reader:
                    for column in columns:
                        values[column] += batch.column(column).to_pylist()
                    if head is not None and len(values[columns[0]]) >= head:
                        break
            else:
                for i, line in enumerate(fh):
                    if head is not None and i >= head:
                        break
                    for column, value in zip(columns, copy_text_fields(line), strict=True):
                        values[column].append(value)
        if head is not None:
            values = {c: v[:head] for c, v in values.items()}
        return to_frame(self.manifest, name, values)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: self.table(name) for name in self.manifest.tables}


def open_backup(
    source: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    checksum: str | None = None,
    encrypted_to: list[str] | None = None,
    identities: IdentitySource = load_identities,
    backup_id: str | None = None,
) -> Backup:
    """Open an artifact from a local path or a URL (``file://``, ``s3://``…), its tables checked
    against its manifest and, given the ledger's ``checksum`` (``sha256:…``), the whole file too."""
    text = str(source)
    workdir = tempfile.TemporaryDirectory(prefix="tenant-backup-open-")
    if urlsplit(text).scheme in ("", "file") and Path(text.removeprefix("file://")).exists():
        local = Path(text.removeprefix("file://"))
    else:
        parent, _, name = text.rpartition("/")
        storage = Storage(parent, storage_options)
        local = Path(workdir.name) / name
        with storage.open_read(name) as src, local.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    if checksum is not None:
        digest = hashlib.sha256()
        with local.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if f"sha256:{digest.hexdigest()}" != checksum:
            raise VerificationError(
                f"artifact {text} does not match the ledger's checksum {checksum}: it was altered or truncated"
            )
    artifact = open_verified(
        local,
        backup_id=backup_id or text,
        tables_dir=Path(workdir.name) / "tables",
        # The whole file is the one the ledger recorded: a CSV ZIP's tables are checked as they
        # are read, not each inflated beforehand (a manifest is shown at once).
        tables_on_read=checksum is not None,
        encrypted_to=encrypted_to,
        identities=identities,
    )
    return Backup(artifact, workdir)
