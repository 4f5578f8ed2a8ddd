"""Names that are data (a tenant id, a database name, a table name) as exactly one path segment.

``encode_segment`` keeps ``[A-Za-z0-9_-]`` and ``.`` (except a leading one) as they are and
writes every other character as ``%XX`` of its UTF-8 bytes, ``%`` and ``/`` included. So a
segment is never empty, ``.`` or ``..``, never holds ``/``, ``\\``, ``:``, a glob character or
a control character, and the mapping is one to one: ``decode_segment`` gives the name back and
refuses any text ``encode_segment`` would not write. Plain ids (UUIDs, slugs) stay readable.

``entry_name`` is the lenient form for a file name inside an artifact (a ZIP entry): a name
stays as it is unless it could be read as a path, then it is encoded. ``spool_name`` is a local
file's: encoded, and apart from every other name where the file system ignores case (macOS,
Windows: tables ``Notes`` and ``notes``).
"""

from __future__ import annotations

import hashlib
import re
import string

from tenant_backup.errors import ConfigurationError

__all__ = ["MAX_SEGMENT_BYTES", "decode_segment", "encode_segment", "entry_name", "spool_name"]

MAX_SEGMENT_BYTES = 200  # under every file system's 255-byte name limit, with room for suffixes
_KEPT = frozenset(string.ascii_letters + string.digits + "_-.")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def encode_segment(name: str, *, what: str = "tenant id", limit: int = MAX_SEGMENT_BYTES) -> str:
    """``name`` as one path segment (see the module's docstring); ConfigurationError when it is
    empty, not valid Unicode, or longer than ``limit`` bytes once encoded."""
    if not name:
        raise ConfigurationError(f"the {what} is empty; give a non-empty {what}")
    out: list[str] = []
    for i, char in enumerate(name):
        if char in _KEPT and not (i == 0 and char == "."):
            out.append(char)
            continue
        try:
            raw = char.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigurationError(f"the {what} {name!r} is not valid Unicode text ({exc.reason})") from exc
        out.extend(f"%{byte:02X}" for byte in raw)
    segment = "".join(out)
    if len(segment) > limit:
        raise ConfigurationError(
            f"the {what} {name[:40]!r}… takes {len(segment)} bytes as a storage path segment, over the limit of "
            f"{limit}; use a shorter {what}"
        )
    return segment


def decode_segment(segment: str, *, what: str = "tenant id") -> str:
    """The name that ``encode_segment`` wrote as ``segment``; ConfigurationError for any other text."""
    try:
        raw = bytearray()
        position = 0
        for escape in _ESCAPE.finditer(segment):
            raw += segment[position : escape.start()].encode("ascii")
            raw.append(int(escape.group(1), 16))
            position = escape.end()
        raw += segment[position:].encode("ascii")
        name = raw.decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        name = None
    if name is None or not name or encode_segment(name, what=what, limit=1 << 30) != segment:
        raise ConfigurationError(f"{segment!r} is not a {what} written by tenant-backup (not its canonical encoding)")
    return name


def entry_name(name: str, *, what: str = "table") -> str:
    """A file name for ``name`` inside an artifact: ``name`` itself when it cannot be read as a
    path (no ``/``, ``\\``, ``%``, control character, no leading ``.``), else its segment
    encoding. Kept names hold no ``%`` and encoded ones do, so no two names share an entry."""
    plain = bool(name) and name[0] != "." and name.isprintable() and not any(c in name for c in "/\\%")
    return name if plain else encode_segment(name, what=what)


def spool_name(name: str, *, what: str = "table") -> str:
    """A local file name for ``name``: its segment encoding and 8 hex digits of its hash, so that
    names differing only in case never share a file where the file system folds case."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{encode_segment(name, what=what, limit=MAX_SEGMENT_BYTES - 9)}-{digest}"
