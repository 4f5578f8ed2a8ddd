"""The three artifact formats, as one mechanism: what PostgreSQL is asked to COPY out for a
table, and how the table's bytes are framed in the artifact.

============  =====================================  ==========================================
format        a table's part                          restore reads it with
============  =====================================  ==========================================
``csv``       ``<table>.csv`` in a ZIP: UTF-8 BOM,     ``COPY … (FORMAT csv, HEADER true)``
              header row, COPY's CSV (NULL unquoted
              empty, '' as ``""``)
``json``      ``"<table>": [`` one JSON object per     rows turned back into COPY text
              line ``]`` in seed 000's document
``sql``       ``COPY "s"."t" (cols) FROM stdin;``      ``COPY … (FORMAT text)``; or
              COPY text rows, ``\\.``                   ``psql --single-transaction -f``
============  =====================================  ==========================================

Every value travels as PostgreSQL's own text form, which its input function reads back exactly
(it is what pg_dump relies on). In JSON, integers, booleans and finite floats are JSON numbers
and booleans; everything else (numeric, bytea, dates and times, intervals, ranges, arrays, json
and jsonb…) is its text form as a JSON string, and the manifest gives each column's type. (jsonb
as a JSON value could not tell SQL NULL from the JSON ``null`` it may hold.) PostgreSQL builds
the JSON itself (``row_to_json``), so the client only frames bytes.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from psycopg import sql

from tenant_backup.errors import UnsupportedTypeError
from tenant_backup.tenancy.catalog import ColumnInfo, TableScope
from tenant_backup.tenancy.diff import stage_name
from tenant_backup.tenancy.filters import select_tenant_rows, tenant_filter

__all__ = [
    "BOM",
    "ArtifactFormat",
    "Framer",
    "base_type",
    "check_types",
    "copy_in_line",
    "copy_statement",
    "legacy_copy_in_line",
]

ArtifactFormat = Literal["csv", "json", "sql"]

BOM = b"\xef\xbb\xbf"  # lets spreadsheets (Excel) read the CSV as UTF-8; COPY skips it with the header

# Types whose JSON form (row_to_json) is a JSON value read back exactly as their text form.
_JSON_NATIVE = {"smallint", "integer", "bigint", "boolean", "real", "double precision"}


def base_type(column: ColumnInfo) -> str:
    """The type without modifiers: ``numeric(12,2)`` -> ``numeric``, ``timestamp(3) with time
    zone`` -> ``timestamp with time zone``; arrays keep their ``[]``."""
    return re.sub(r"\(.*?\)", "", column.type).replace("  ", " ").strip()


# Types whose text form does not read back as the same value in another database or session.
_REFUSED = {
    "money": "its text form follows lc_monetary (currency symbol, separators); store it as numeric",
    "lo": "the value is a large object's OID, and large objects are not backed up; store the bytes as bytea",
}


def check_types(scopes: list[TableScope]) -> None:
    """Refuse, before anything is written, a column no artifact can carry exactly."""
    for scope in scopes:
        for column in scope.copied_columns:
            name = base_type(column).removesuffix("[]")
            reason = _REFUSED.get(name)
            if reason is None and name.startswith("reg"):
                reason = "it holds OIDs of this database's objects"
            if reason is not None:
                raise UnsupportedTypeError(
                    f"column {scope.table}.{column.name} has type {column.type}, which a backup cannot carry "
                    f"exactly: {reason}; or leave table {scope.table} out (categories)",
                    table=scope.table,
                )


def _json_expr(column: ColumnInfo) -> sql.Composable:
    ident = sql.Identifier(column.name)
    if base_type(column) in _JSON_NATIVE:
        return ident
    # concat() prints through the type's output function, as COPY does; a ::text cast would not
    # (char(n) loses its padding, inet gains a /32).
    return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END AS {c}").format(c=ident)


def copy_statement(scope: TableScope, fmt: ArtifactFormat, only: sql.Composable | None = None) -> sql.Composed:
    """``COPY (<the tenant's rows>) TO STDOUT`` in the shape ``fmt`` stores; ``only``: those of them
    that also meet this condition (an incremental's changed rows)."""
    if fmt == "csv":
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(select_tenant_rows(scope, only))
    if fmt == "sql":
        return sql.SQL("COPY ({}) TO STDOUT").format(select_tenant_rows(scope, only))
    # One JSON object per line. CSV with quote and delimiter bytes that JSON text never holds raw
    # (row_to_json escapes control characters) writes each line exactly as PostgreSQL built it.
    select = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(_json_expr(c) for c in scope.copied_columns),
        scope.ident(),
        tenant_filter(scope) if only is None else sql.SQL("{} AND {}").format(tenant_filter(scope), only),
    )
    return sql.SQL(
        "COPY (SELECT row_to_json(tenant_backup_row.*) FROM ({}) tenant_backup_row) "
        "TO STDOUT (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
    ).format(select)


def copy_in_line(table: str, columns: list[str]) -> bytes:
    """The SQL artifact's ``COPY pg_temp."<table>" (columns) FROM stdin;``: a table's rows go to
    its staging table (see :mod:`artifact.script`)."""
    statement = sql.SQL("COPY {}.{} ({}) FROM stdin;\n").format(
        sql.Identifier("pg_temp"), sql.Identifier(stage_name(table)), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    return statement.as_string(None).encode("utf-8")


def legacy_copy_in_line(schema: str, table: str, columns: list[str]) -> bytes:
    """The same line in SQL artifacts before 1.2, which COPYed into the table itself."""
    statement = sql.SQL("COPY {}.{} ({}) FROM stdin;\n").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    return statement.as_string(None).encode("utf-8")


class Framer:
    """Turns a table's COPY blocks into its part of the artifact.

    ``prefix`` and ``suffix`` frame the table; ``data`` maps each block (whole rows). The sha256
    in the manifest covers what ``data`` returns plus, for CSV, the prefix: the table's file.
    """

    def __init__(self, fmt: ArtifactFormat, scope: TableScope) -> None:
        self.fmt = fmt
        self._first = True
        if fmt == "csv":
            self.prefix, self.suffix = b"", b""
        elif fmt == "sql":
            columns = [c.name for c in scope.copied_columns]
            self.prefix, self.suffix = copy_in_line(scope.table, columns), b"\\.\n"
        else:
            self.prefix, self.suffix = json.dumps(scope.table, ensure_ascii=False).encode() + b": [\n", b"]"

    def data(self, block: bytearray) -> bytes | bytearray:
        if self.fmt == "csv":
            if self._first:
                self._first = False
                return BOM + block
            return block
        if self.fmt == "sql":
            return block
        # JSON: rows separated by ",\n"; the block's last newline waits for the next block.
        body = block[:-1].replace(b"\n", b",\n")
        if self._first:
            self._first = False
            return body
        return b",\n" + body

    def end(self) -> bytes:
        """Bytes closing the data (the JSON's last newline); counted in the sha256."""
        if self.fmt == "json" and not self._first:
            return b"\n"
        return b""
