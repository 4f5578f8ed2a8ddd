"""Compression of artifacts: one codec per backup, recorded in its manifest.

Every table is compressed on its own while it is extracted (in parallel); the artifact is then
assembled by copying the compressed parts. That works because each codec's unit concatenates:
raw deflate streams are separate ZIP entries, gzip members and zstd frames concatenate into one
valid stream (RFC 1952 §2.2; the zstd frame format), and ``none`` is plain bytes.

- ``deflate`` (default): ISA-L, level 1 unless set: ~300 MB/s a core here, read by every unzip,
  gzip and spreadsheet.
- ``zstd``: smaller at the same speed; JSON and SQL artifacts only (`zstd -dc backup.sql.zst |
  psql …`): spreadsheets cannot open a ZIP of zstd entries.
- ``none``: stored as is.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Literal, Protocol, cast

import zstandard
from isal import igzip, isal_zlib

from tenant_backup.errors import ConfigurationError

# What reading damaged compressed bytes raises, whichever codec (zipfile's zlib, ISA-L's gzip, zstd).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    cast(type[Exception], isal_zlib.error),  # typed as an instance in isal's stubs
    zstandard.ZstdError,
)

__all__ = [
    "DECODE_ERRORS",
    "Compression",
    "Compressor",
    "check_compression",
    "compressor",
    "decompressed",
    "default_level",
    "suffix",
]

Compression = Literal["deflate", "zstd", "none"]
Container = Literal["zip", "stream"]


class Compressor(Protocol):
    def compress(self, data: bytes | bytearray, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes | bytearray, /) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


def default_level(method: Compression) -> int:
    return {"deflate": 1, "zstd": 3, "none": 0}[method]


def check_compression(method: Compression, level: int, artifact_format: str) -> None:
    """Refuse combinations that would write an artifact its users cannot open."""
    if method == "zstd" and artifact_format == "csv":
        raise ConfigurationError(
            "zstd cannot be used for the CSV ZIP format: spreadsheets and unzip do not read zstd entries; "
            "use compression=deflate or none, or format=json/sql with zstd"
        )
    limits = {"deflate": (0, 3), "zstd": (1, 19), "none": (0, 0)}[method]
    if not limits[0] <= level <= limits[1]:
        raise ConfigurationError(
            f"compression level {level} is out of range for {method}: use {limits[0]}..{limits[1]}"
        )


def compressor(method: Compression, level: int, container: Container) -> Compressor:
    """A compressor for one table: a raw deflate stream for a ZIP entry, or one self-contained
    gzip member / zstd frame for a JSON or SQL artifact."""
    if method == "none":
        return _Identity()
    if method == "deflate":
        return cast(Compressor, isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15 if container == "zip" else 31))
    return cast(Compressor, zstandard.ZstdCompressor(level=level).compressobj())


def suffix(artifact_format: str, method: Compression) -> str:
    """The artifact's file name suffix: ``zip``, ``json.gz``, ``sql.zst``, ``sql``…"""
    if artifact_format == "csv":
        return "zip"
    return artifact_format + {"deflate": ".gz", "zstd": ".zst", "none": ""}[method]


@contextmanager
def decompressed(raw: BinaryIO, method: Compression) -> Iterator[BinaryIO]:
    """Read a JSON or SQL artifact stream (all its gzip members / zstd frames) decompressed."""
    if method == "none":
        yield raw
    elif method == "deflate":
        with igzip.IGzipFile(fileobj=raw, mode="rb") as fh:  # type: ignore[no-untyped-call]
            yield cast(BinaryIO, fh)
    else:  # zstd's reader has no readline: buffer it
        with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
            yield cast(BinaryIO, io.BufferedReader(cast(io.RawIOBase, reader), 1 << 20))
