"""Fetching and verifying an artifact before anything is restored from it.

The artifact is downloaded to a local spool file while its sha256 is computed and compared with
the ledger's checksum; then the manifest's format and version are checked and every table is
re-hashed against the manifest (a CSV ZIP fetched against the ledger's checksum: as the restore
reads it). A CSV ZIP is then read in place; a JSON or SQL artifact is read
once, as a stream, and each table is written to the spool as COPY text while it is checked (a
restore reads the tables in foreign-key order, not in file order). Only an artifact that passes
all of it is opened for restore. Nothing here needs a database.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import ValidationError

from tenant_backup.artifact.codecs import DECODE_ERRORS, Compression, decompressed
from tenant_backup.artifact.documents import document_checksum
from tenant_backup.artifact.encryption import (
    IdentitySource,
    decrypt_file,
    identities_for,
    is_encrypted,
    load_identities,
)
from tenant_backup.artifact.formats import copy_in_line, legacy_copy_in_line
from tenant_backup.artifact.inflate import ForwardStream, open_entry
from tenant_backup.artifact.manifest import INCREMENTAL_VERSION, Manifest
from tenant_backup.artifact.rows import json_row_to_copy_text
from tenant_backup.errors import VerificationError
from tenant_backup.segments import entry_name, spool_name
from tenant_backup.storage import Storage
from tenant_backup.tenancy.catalog import split_name

__all__ = ["Artifact", "fetch_artifact", "open_verified"]

_CHUNK = 1 << 20
_DATA_OPEN = b', "data": {\n'
_MAGIC: dict[bytes, Compression] = {b"\x1f\x8b": "deflate", b"\x28\xb5\x2f\xfd": "zstd"}


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 1 << 30  # unparseable: treat as newer than anything we know


def table_file(tables_dir: Path, table: str) -> Path:
    """Where one table's COPY text is spooled: its name encoded, so that no table name (``../x``,
    ``a/b``) reaches outside ``tables_dir``, nor shares a file with another where case folds."""
    return tables_dir / f"{spool_name(table)}.copy"


def tables_dir_of(path: Path) -> Path:
    """Where a JSON or SQL artifact's tables are spooled as COPY text: next to it."""
    return path.with_name(path.name + ".tables")


class Artifact:
    """A verified artifact in a local file: its manifest and its tables' rows, ready for COPY.

    With ``check_on_read`` (a CSV ZIP whose whole sha256 matched the ledger's), each table is
    re-hashed against the manifest as it is read, not beforehand: a restore reads every table
    once, inside its transaction, and a mismatch raises there, before anything is written."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        tables_dir: Path | None = None,
        *,
        check_on_read: bool = False,
        chain: list[Artifact] | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.tables_dir = tables_dir or tables_dir_of(path)
        self.check_on_read = check_on_read
        self.chain = chain or []  # an incremental's ancestors, its base first

    @property
    def state(self) -> Manifest:
        """The manifest as a restore sees it: each table's rows are the tenant's at the snapshot
        (an incremental's changes rebuild them from its chain)."""
        if not self.chain:
            return self.manifest
        tables = {name: t.model_copy(update={"rows": t.total}) for name, t in self.manifest.tables.items()}
        return self.manifest.model_copy(
            update={"tables": tables, "total_records": sum(t.rows for t in tables.values())}
        )

    @property
    def copy_format(self) -> Literal["csv", "text"]:
        """What :meth:`open_table` yields: CSV with a header row, or COPY text."""
        return "csv" if self.manifest.artifact_format == "csv" else "text"

    @contextmanager
    def open_table(self, table: str) -> Iterator[BinaryIO]:
        """The rows of ``table`` in :attr:`copy_format`, decompressed as they are read."""
        if self.manifest.artifact_format == "csv":
            with (
                zipfile.ZipFile(self.path) as archive,
                open_entry(self.path, archive, _entry(self.manifest, table)) as fh,
            ):
                if self.check_on_read:
                    yield _Checked(fh, self.manifest, table, self.manifest.backup_id)  # type: ignore[misc]
                else:
                    yield fh
        else:
            with table_file(self.tables_dir, table).open("rb") as fh:
                yield fh

    @contextmanager
    def open_keys(self, table: str) -> Iterator[BinaryIO]:
        """An incremental's changed key buckets of ``table`` (CSV ``bucket,key_hash``; checked
        against the manifest when the artifact was opened)."""
        name = self.manifest.tables[table].keys_file
        assert name is not None, f"table {table} of backup {self.manifest.backup_id} holds no changes"
        with zipfile.ZipFile(self.path) as archive, archive.open(name) as fh:
            yield fh  # type: ignore[misc]


def _entry(manifest: Manifest, table: str) -> str:
    """The ZIP entry of ``table``'s CSV."""
    return manifest.tables[table].file or f"{entry_name(table)}.csv"


def _unreadable(table: str, backup_id: str, exc: BaseException) -> VerificationError:
    return VerificationError(
        f"table {table} of backup {backup_id} cannot be read ({exc}); it is damaged", backup_id=backup_id, table=table
    )


class _Checked(ForwardStream):
    """A table's stream that checks its sha256 against the manifest when it reaches the end
    (the one check of a table's bytes: up front for a whole ZIP, or as a restore reads it)."""

    def __init__(self, fh: BinaryIO, manifest: Manifest, table: str, backup_id: str) -> None:
        self._fh, self._manifest, self._table, self._backup_id = fh, manifest, table, backup_id
        self._digest = hashlib.sha256()
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._fh.read(size)
        except _ZIP_UNREADABLE as exc:
            raise _unreadable(self._table, self._backup_id, exc) from exc
        if data:
            self._digest.update(data)
        elif not self._checked:
            self._checked = True
            _check_table(self._manifest, self._table, self._digest.hexdigest(), None, self._backup_id)
        return data


def fetch_artifact(
    storage: Storage,
    storage_path: str,
    checksum: str | None,
    dest: Path,
    *,
    backup_id: str,
    encrypted_to: list[str] | None = None,
    identities: IdentitySource = load_identities,
) -> Artifact:
    """Download ``storage_path`` into ``dest`` and verify it whole (an age file: decrypted, then
    verified; ``encrypted_to`` names its recipients when no identity opens it). Raises
    VerificationError."""
    if encrypted_to:  # refused before the download when none of its recipients' identities is at hand
        held = identities_for(backup_id, encrypted_to, identities)
        identities = lambda: held  # noqa: E731 - read once (a Secret block, a tenant key unwrapped)
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
    artifact = open_verified(
        dest, backup_id=backup_id, tables_on_read=True, encrypted_to=encrypted_to, identities=identities
    )
    if artifact.path != dest:
        dest.unlink()  # the age file, once decrypted: the spool holds one copy
    return artifact


_UNREADABLE: tuple[type[BaseException], ...] = (*DECODE_ERRORS, UnicodeDecodeError)
_ZIP_UNREADABLE: tuple[type[BaseException], ...] = (KeyError, zipfile.BadZipFile, *DECODE_ERRORS)


def open_verified(
    path: Path,
    *,
    backup_id: str = "?",
    tables_dir: Path | None = None,
    tables_on_read: bool = False,
    encrypted_to: list[str] | None = None,
    identities: IdentitySource = load_identities,
) -> Artifact:
    """Check the manifest's format and version and every table's sha256 and row count (a CSV
    ZIP's tables as they are read, with ``tables_on_read``: see :class:`Artifact`).

    A JSON or SQL artifact's tables go to ``tables_dir`` (default: next to ``path``); an age file
    is decrypted first, with the identities at hand, into ``<name>.decrypted`` beside
    ``tables_dir`` (default: beside ``path``)."""
    if is_encrypted(path):
        plain = (tables_dir.parent if tables_dir else path.parent) / f"{path.name}.decrypted"
        plain.parent.mkdir(parents=True, exist_ok=True)
        decrypt_file(path, plain, backup_id=backup_id, recipients=encrypted_to, identities=identities)
        path = plain
    tables_dir = tables_dir or tables_dir_of(path)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic.startswith(b"PK"):
        return Artifact(path, _verify_zip(path, backup_id, tables=not tables_on_read), check_on_read=tables_on_read)
    tables_dir.mkdir(parents=True, exist_ok=True)
    method: Compression = next((m for prefix, m in _MAGIC.items() if magic.startswith(prefix)), "none")
    try:
        with path.open("rb") as raw, decompressed(raw, method) as lines:
            manifest = _verify_document(lines, tables_dir, backup_id)
    except _UNREADABLE as exc:
        raise VerificationError(
            f"backup {backup_id} cannot be read: {exc}; it is damaged", backup_id=backup_id
        ) from exc
    return Artifact(path, manifest, tables_dir)


def _manifest(raw: Any, backup_id: str) -> Manifest:
    if not isinstance(raw, dict) or raw.get("format") != "tenant-backup":
        raise VerificationError(f"backup {backup_id} is not a tenant-backup artifact", backup_id=backup_id)
    version = str(raw.get("version", ""))
    if _major(version) > _major(INCREMENTAL_VERSION):
        raise VerificationError(
            f"backup {backup_id} was written by artifact version {version}, newer than this tool's "
            f"{INCREMENTAL_VERSION}: upgrade tenant-backup to restore it",
            backup_id=backup_id,
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise VerificationError(f"backup {backup_id} has an invalid manifest: {exc}", backup_id=backup_id) from exc


def _check_table(manifest: Manifest, table: str, digest: str, rows: int | None, backup_id: str) -> None:
    entry = manifest.tables[table]
    if digest != entry.sha256 or (rows is not None and rows != entry.rows):
        raise VerificationError(
            f"table {table} of backup {backup_id} does not match its sha256 and row count in the manifest",
            backup_id=backup_id,
            table=table,
        )


def _verify_zip(path: Path, backup_id: str, *, tables: bool = True) -> Manifest:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise VerificationError(f"backup {backup_id} is not a readable ZIP ({exc})", backup_id=backup_id) from exc
    with archive:
        try:
            raw = json.loads(archive.read("manifest.json"))
        except _ZIP_UNREADABLE as exc:
            raise VerificationError(
                f"backup {backup_id} has no readable manifest.json ({exc}): it is damaged, or not a tenant-backup "
                "artifact",
                backup_id=backup_id,
            ) from exc
        manifest = _manifest(raw, backup_id)
        names = set(archive.namelist())
        missing = [
            t
            for t, m in manifest.tables.items()
            if _entry(manifest, t) not in names or (m.keys_file is not None and m.keys_file not in names)
        ]
        if missing:
            raise VerificationError(
                f"backup {backup_id} lacks the file of table {missing[0]} that its manifest lists; it is damaged",
                backup_id=backup_id,
                table=missing[0],
            )
        for table, entry in manifest.tables.items():  # an incremental's key buckets: small, always checked here
            if entry.keys_file is not None:
                try:
                    data = archive.read(entry.keys_file)
                except _ZIP_UNREADABLE as exc:
                    raise _unreadable(table, backup_id, exc) from exc
                if hashlib.sha256(data).hexdigest() != entry.keys_sha256:
                    raise VerificationError(
                        f"the changed keys of table {table} in backup {backup_id} do not match their sha256 in the "
                        "manifest; it is damaged",
                        backup_id=backup_id,
                        table=table,
                    )
        for table in manifest.tables if tables else ():
            try:
                with open_entry(path, archive, _entry(manifest, table)) as fh:
                    checked = _Checked(fh, manifest, table, backup_id)
                    while checked.read(_CHUNK):
                        pass
            except _ZIP_UNREADABLE as exc:
                raise _unreadable(table, backup_id, exc) from exc
    return manifest


def _verify_document(lines: BinaryIO, tables_dir: Path, backup_id: str) -> Manifest:
    first = lines.readline()
    if first.startswith(b"{") and first.endswith(_DATA_OPEN):
        head = json.loads(first[: -len(_DATA_OPEN)] + b"}")
        manifest = _manifest(head.get("manifest") if isinstance(head, dict) else None, backup_id)
        seen = _json_tables(lines, manifest, tables_dir, backup_id)
    elif first.startswith(b"--"):
        manifest, seen = _sql_tables(lines, tables_dir, backup_id)
    else:
        raise VerificationError(f"backup {backup_id} is not a tenant-backup artifact", backup_id=backup_id)
    if seen != manifest.table_order or set(seen) != set(manifest.tables):
        raise VerificationError(
            f"backup {backup_id} holds tables {seen}, its manifest {manifest.table_order}: it is truncated or "
            "altered; restore another backup",
            backup_id=backup_id,
        )
    return manifest


def _json_tables(lines: BinaryIO, manifest: Manifest, tables_dir: Path, backup_id: str) -> list[str]:
    seen: list[str] = []
    while True:
        line = lines.readline()
        if line.startswith(b"}, "):
            tail = json.loads(b"{" + line[3:])
            if tail.get("checksum") != document_checksum(manifest, seen):
                raise VerificationError(
                    f"backup {backup_id}: the document's checksum does not match", backup_id=backup_id
                )
            return seen
        if not line.endswith(b": [\n"):
            raise VerificationError(f"backup {backup_id} ends early or is not ours: {line[:60]!r}", backup_id=backup_id)
        table = json.loads(line[:-4])
        if table not in manifest.tables:
            raise VerificationError(
                f"backup {backup_id} holds table {table!r}, not in its manifest", backup_id=backup_id
            )
        columns = [c.name for c in manifest.tables[table].columns if not c.generated]
        digest, rows = hashlib.sha256(), 0
        with table_file(tables_dir, table).open("wb") as out:
            while (row := lines.readline()) not in (b"]\n", b"],\n", b""):
                digest.update(row)
                rows += 1
                out.write(json_row_to_copy_text(row, columns))
        _check_table(manifest, table, digest.hexdigest(), rows, backup_id)
        seen.append(table)


def _sql_tables(lines: BinaryIO, tables_dir: Path, backup_id: str) -> tuple[Manifest, list[str]]:
    manifest: Manifest | None = None
    seen: list[str] = []
    ended = False
    while line := lines.readline():
        if line.startswith(b"-- manifest: ") and manifest is None:
            manifest = _manifest(json.loads(line[len(b"-- manifest: ") :]), backup_id)
        elif line.startswith(b"COPY ") and manifest is not None and len(seen) < len(manifest.table_order):
            table = manifest.table_order[len(seen)]
            columns = [c.name for c in manifest.tables[table].columns if not c.generated]
            if line not in (
                copy_in_line(table, columns),
                legacy_copy_in_line(*split_name(table, manifest.db_schema), columns),
            ):
                raise VerificationError(
                    f"backup {backup_id}: unexpected {line[:80]!r}", backup_id=backup_id, table=table
                )
            digest, rows = hashlib.sha256(), 0
            with table_file(tables_dir, table).open("wb") as out:
                while (row := lines.readline()) not in (b"\\.\n", b""):
                    digest.update(row)
                    rows += 1
                    out.write(row)
            _check_table(manifest, table, digest.hexdigest(), rows, backup_id)
            seen.append(table)
        elif manifest is not None and line == f"-- end of backup {manifest.backup_id}\n".encode():
            ended = True
    if manifest is None or not ended:
        raise VerificationError(f"backup {backup_id} is not a complete tenant-backup SQL artifact", backup_id=backup_id)
    return manifest, seen
