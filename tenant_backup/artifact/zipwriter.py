"""A streaming ZIP writer for entries that are already deflate-compressed.

Tables are compressed in parallel while they are extracted; the ZIP container is then written
in one sequential pass to a non-seekable stream (an S3 multipart upload), copying each entry's
compressed bytes as they are. Python's :mod:`zipfile` cannot take precompressed data, hence
this small writer. It writes ZIP64 records where sizes or offsets pass 4 GiB, UTF-8 names, and
local headers with the real sizes (no data descriptors), which every unzip tool reads.
"""

from __future__ import annotations

import struct
from datetime import datetime
from io import BytesIO
from typing import BinaryIO, Protocol

from isal import isal_zlib

__all__ = ["Writer", "ZipStreamWriter"]


class Writer(Protocol):
    """Where an artifact's bytes go: a storage handle, or a stream in front of it (hashing, age)."""

    def write(self, data: bytes | memoryview, /) -> int: ...


_LIMIT = 0xFFFFFFFF
_DEFLATED = 8
_STORED = 0
_UTF8 = 0x0800
_COPY_CHUNK = 1 << 20


def _dos_time(moment: datetime) -> tuple[int, int]:
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return time, date


class _Entry:
    __slots__ = ("compressed_size", "crc32", "method", "name", "offset", "size", "zip64")

    def __init__(
        self, name: bytes, crc32: int, compressed_size: int, size: int, offset: int, zip64: bool, method: int
    ) -> None:
        self.method = method
        self.name = name
        self.crc32 = crc32
        self.compressed_size = compressed_size
        self.size = size
        self.offset = offset
        self.zip64 = zip64


class ZipStreamWriter:
    """Write a ZIP archive to ``out`` sequentially; ``size`` counts every byte."""

    def __init__(self, out: Writer, *, modified: datetime, force_zip64: bool = False) -> None:
        self._out = out
        self._time, self._date = _dos_time(modified)
        self._force_zip64 = force_zip64
        self._entries: list[_Entry] = []
        self._offset = 0
        self._closed = False

    @property
    def size(self) -> int:
        return self._offset

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self._offset += len(data)

    def add_precompressed(
        self, name: str, source: BinaryIO, *, crc32: int, compressed_size: int, size: int, stored: bool = False
    ) -> None:
        """Add an entry whose raw deflate data (or, ``stored``, plain data) is read from ``source``."""
        zip64 = self._force_zip64 or size >= _LIMIT or compressed_size >= _LIMIT or self._offset >= _LIMIT
        method = _STORED if stored else _DEFLATED
        entry = _Entry(name.encode("utf-8"), crc32, compressed_size, size, self._offset, zip64, method)
        extra = struct.pack("<HHQQ", 0x0001, 16, size, compressed_size) if zip64 else b""
        header = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            45 if zip64 else 20,
            _UTF8,
            method,
            self._time,
            self._date,
            crc32,
            _LIMIT if zip64 else compressed_size,
            _LIMIT if zip64 else size,
            len(entry.name),
            len(extra),
        )
        self._write(header + entry.name + extra)
        copied = 0
        while chunk := source.read(_COPY_CHUNK):
            self._write(chunk)
            copied += len(chunk)
        if copied != compressed_size:
            raise ValueError(f"entry {name}: expected {compressed_size} compressed bytes, read {copied}")
        self._entries.append(entry)

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add a small entry held in memory (the manifest), deflated here."""
        compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
        packed = compressor.compress(data) + compressor.flush()
        self.add_precompressed(
            name, BytesIO(packed), crc32=isal_zlib.crc32(data), compressed_size=len(packed), size=len(data)
        )

    def close(self) -> None:
        """Write the central directory and the end records."""
        if self._closed:
            return
        self._closed = True
        start = self._offset
        for e in self._entries:
            extra = struct.pack("<HHQQQ", 0x0001, 24, e.size, e.compressed_size, e.offset) if e.zip64 else b""
            self._write(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    (3 << 8) | 45,  # made by: Unix, spec 4.5
                    45 if e.zip64 else 20,
                    _UTF8,
                    e.method,
                    self._time,
                    self._date,
                    e.crc32,
                    _LIMIT if e.zip64 else e.compressed_size,
                    _LIMIT if e.zip64 else e.size,
                    len(e.name),
                    len(extra),
                    0,
                    0,
                    0,
                    0o100644 << 16,  # regular file, rw-r--r--
                    _LIMIT if e.zip64 else e.offset,
                )
                + e.name
                + extra
            )
        cd_size = self._offset - start
        count = len(self._entries)
        if self._force_zip64 or count >= 0xFFFF or start >= _LIMIT or cd_size >= _LIMIT:
            eocd64 = self._offset
            self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, start))
            self._write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
            self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, _LIMIT, _LIMIT, 0))
        else:
            self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, start, 0))
