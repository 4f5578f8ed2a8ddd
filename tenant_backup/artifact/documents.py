"""The text around the tables of a JSON artifact: header and footer (pure functions; the SQL
artifact's are in :mod:`artifact.script`).

JSON (seed 000's document; our manifest rides along under ``manifest``)::

    {"version": …, "date": …, "etablissement_id": …, "etablissement_nom": …, "type": …,
     "categories_selectionnees": […], "format": "tenant-backup", "manifest": {…}, "data": {
    "ventes": [
    {…one row…},
    {…}
    ],
    "clients": [
    ]
    }, "metadata": {"total_records": …, "tables_count": …, "size_bytes": …},
    "checksum": "sha256:…"}

The header is one line, every row one line, so a reader streams it line by line. ``checksum``
is the sha256 of the lines ``<table>:<sha256 of its rows>\\n`` in document order (each table's
rows are hashed while they are extracted, in parallel; the whole file's sha256 is in the ledger).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from tenant_backup.artifact.manifest import Manifest

__all__ = ["document_checksum", "json_footer", "json_header"]


def document_checksum(manifest: Manifest, order: Iterable[str]) -> str:
    lines = "".join(f"{name}:{manifest.tables[name].sha256}\n" for name in order)
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def json_header(manifest: Manifest, name_key: str) -> bytes:
    head = {
        "version": manifest.version,
        "date": manifest.date.isoformat().replace("+00:00", "Z"),
        manifest.tenant_column: manifest.tenant_id,
        name_key: manifest.tenant_name,
        "type": manifest.type,
        "categories_selectionnees": manifest.categories,
        "format": manifest.format,
        "manifest": manifest.model_dump(mode="json"),
    }
    text = json.dumps(head, ensure_ascii=False)
    return (text[:-1] + ', "data": {\n').encode("utf-8")


def json_footer(manifest: Manifest, order: list[str]) -> bytes:
    metadata = {
        "total_records": manifest.total_records,
        "tables_count": manifest.tables_count,
        "size_bytes": manifest.size_bytes,
    }
    tail = {"metadata": metadata, "checksum": document_checksum(manifest, order)}
    return ("}, " + json.dumps(tail)[1:] + "\n").encode("utf-8")
