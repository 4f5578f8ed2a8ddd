"""Rows between the artifact formats and COPY's text format (pure functions).

A JSON artifact's row is an object whose values are JSON numbers (integers, finite floats, as
PostgreSQL printed them), booleans, strings (every other value's text form) or null (SQL NULL).
Each becomes one line of ``COPY … FROM STDIN`` text: numbers keep their exact digits (they are
parsed as strings, never as floats), strings are escaped as COPY wants.
"""

from __future__ import annotations

import json
import re

__all__ = ["copy_text_fields", "json_row_to_copy_text"]

_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_UNESCAPE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPED = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_decoder = json.JSONDecoder(parse_float=str, parse_int=str)


def _text(value: object) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        return value.translate(_ESCAPE)
    raise ValueError(f"unexpected JSON value {value!r}: artifact values are numbers, booleans, strings or null")


def json_row_to_copy_text(line: bytes, columns: list[str]) -> bytes:
    """One JSON row line (``{…}`` with an optional trailing comma) as a COPY text line."""
    row = _decoder.decode(line.rstrip(b",\n").decode("utf-8"))
    if list(row) != columns:
        raise ValueError(f"row has columns {list(row)}, the manifest {columns}")
    return ("\t".join(_text(v) for v in row.values()) + "\n").encode("utf-8")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _UNESCAPE.get(code, code)


def copy_text_fields(line: bytes) -> list[str | None]:
    """The fields of one COPY text line, NULL as None."""
    fields: list[str | None] = []
    for raw in line.rstrip(b"\n").decode("utf-8").split("\t"):
        if raw == "\\N":
            fields.append(None)
        elif "\\" in raw:
            fields.append(_ESCAPED.sub(_unescape, raw))
        else:
            fields.append(raw)
    return fields
