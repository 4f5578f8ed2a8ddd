"""Reading one entry of a CSV ZIP, inflated with ISA-L: about twice zipfile's zlib speed here
(0.33 s against 0.69 s for a 184 MB table), which every restore and ``verify`` reads once.

Entries that are stored (``none``) are read as they are; the entry's CRC-32 is checked at its
end, as :mod:`zipfile` does, so a damaged entry raises :class:`zipfile.BadZipFile`.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from isal import isal_zlib

__all__ = ["ForwardStream", "open_entry"]

_READ = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class ForwardStream:
    """A readable stream that cannot seek, over the file ``_fh`` (what COPY and zipfile ask of one)."""

    _fh: BinaryIO

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class _Entry(ForwardStream):
    """One entry's bytes."""

    def __init__(self, fh: BinaryIO, info: zipfile.ZipInfo) -> None:
        self._fh = fh
        self._info = info
        self._left = info.compress_size
        self._size = info.file_size
        self._inflate = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        self._pending = b""
        self._at = 0
        self._crc = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer near a block's end, as a raw stream may); all with -1."""
        if size is None or size < 0:
            parts = []
            while chunk := self.read(_READ):
                parts.append(chunk)
            return b"".join(parts)
        while self._at >= len(self._pending) and not self._done:
            self._pending, self._at = self._more(), 0
        data = self._pending[self._at : self._at + size]
        self._at += len(data)
        return data

    def _more(self) -> bytes:
        raw = self._fh.read(min(self._left, _READ)) if self._left else b""
        self._left -= len(raw)
        if self._left and not raw:
            raise zipfile.BadZipFile(f"entry {self._info.filename} is truncated")
        out = raw if self._inflate is None else self._inflate.decompress(raw)
        if not self._left:
            if self._inflate is not None:
                out += self._inflate.flush()
            self._done = True
        out = out[: self._size]  # as zipfile, the entry's size: bytes decoded past it are not its
        self._size -= len(out)
        self._crc = isal_zlib.crc32(out, self._crc)
        if self._done and self._crc != self._info.CRC:
            raise zipfile.BadZipFile(f"bad CRC-32 for entry {self._info.filename}")
        return out


@contextmanager
def open_entry(path: Path, archive: zipfile.ZipFile, name: str) -> Iterator[BinaryIO]:
    """Entry ``name`` of the ZIP at ``path`` (``archive``: the same file, open), inflated as read.
    Methods other than deflate and store are read through :mod:`zipfile`."""
    info = archive.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED) or info.flag_bits & 0x1:
        with archive.open(info) as fh:
            yield cast(BinaryIO, fh)
        return
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        if signature != _LOCAL_SIGNATURE:
            raise zipfile.BadZipFile(f"entry {name} has no local header where the directory says")
        fh.seek(name_length + extra_length, 1)
        yield cast(BinaryIO, _Entry(fh, info))
