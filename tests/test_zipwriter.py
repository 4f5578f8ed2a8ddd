"""The streaming ZIP writer: archives that zipfile and unzip read back exactly."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from isal import isal_zlib

from tenant_backup.artifact.zipwriter import ZipStreamWriter


def _deflate(data: bytes) -> bytes:
    c = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("zip64", [False, True])
def test_precompressed_entries_read_back_exactly(tmp_path: Path, zip64: bool) -> None:
    entries = {"ventes.csv": b'id,notes\n1,"a,\n""b"""\n2,\n' * 500, "vide.csv": b"", "été.csv": "é\n".encode()}
    out = io.BytesIO()
    writer = ZipStreamWriter(out, modified=datetime(2026, 1, 30, 12, 0, 0), force_zip64=zip64)
    for name, data in entries.items():
        packed = _deflate(data)
        writer.add_precompressed(
            name, io.BytesIO(packed), crc32=isal_zlib.crc32(data), compressed_size=len(packed), size=len(data)
        )
    writer.add_bytes("manifest.json", b'{"version": "1.0.0"}')
    writer.close()
    blob = out.getvalue()
    assert writer.size == len(blob)
    archive = zipfile.ZipFile(io.BytesIO(blob))
    assert archive.testzip() is None
    assert {n: archive.read(n) for n in entries} == entries
    assert archive.getinfo("ventes.csv").date_time == (2026, 1, 30, 12, 0, 0)
    if shutil.which("unzip"):
        path = tmp_path / "a.zip"
        path.write_bytes(blob)
        assert subprocess.run(["unzip", "-tq", str(path)], capture_output=True).returncode == 0


def test_short_source_is_refused() -> None:
    writer = ZipStreamWriter(io.BytesIO(), modified=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="expected 10 compressed bytes, read 3"):
        writer.add_precompressed("t.csv", io.BytesIO(b"abc"), crc32=0, compressed_size=10, size=20)
