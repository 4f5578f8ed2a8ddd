"""The SQL that makes a tenant's rows of one table equal to staged rows (pure builders).

The restore flow runs these statements (``restore/``); the SQL artifact writes the same ones out
for ``psql --single-transaction`` (``artifact/documents``): one mechanism for both. Each table's
backed-up rows are first loaded into a temporary *staging* table (``pg_temp."tenant_backup
staging billing.invoices"``); then:

* a table **with a key** (its primary key, else a unique index of NOT NULL columns, as a replica
  identity would be) is compared by key: insert the missing keys, update the rows that differ,
  delete the keys the backup lacks;
* a table **without one** is compared as a multiset of rows: each distinct row (its text form,
  what COPY prints) is inserted or deleted as many times as the backup and the table differ by,
  duplicates included; deletes go by physical address (``tableoid``, ``ctid``).

Unchanged rows are never touched. The tenant is ``%(tenant)s`` by default, or a literal
(``tenant=sql.Literal(id)``) in a script.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from psycopg import sql

from tenant_backup.tenancy.catalog import ForeignKey, TableScope
from tenant_backup.tenancy.filters import TENANT, tenant_filter

__all__ = [
    "ACTION",
    "RestoreTable",
    "dangling",
    "delete_surplus",
    "doomed_keys",
    "doomed_references",
    "insert_missing",
    "referencing",
    "stage_name",
    "update_changed",
]


# Types without an equality operator: compared through their text form.
_NO_EQUALITY = ("json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle")

STAGE_PREFIX = "tenant_backup staging "
# The column of a table's delta (restore/delta.py) that says what the apply does with a key:
# insert, update, delete, or keep.
ACTION = sql.Identifier("tenant_backup_action")


def stage_name(table: str) -> str:
    """The staging table of ``table``: ``pg_temp."tenant_backup staging ventes"`` (hashed when too
    long for an identifier). Never the table's own name: PostgreSQL looks in ``pg_temp`` first, so
    a staging table named like the app's table would stand in for it in the app's trigger code."""
    name = STAGE_PREFIX + table
    if len(name.encode("utf-8")) <= 63:
        return name
    return STAGE_PREFIX + hashlib.sha256(table.encode("utf-8")).hexdigest()[:32]


class RestoreTable:
    """One table being restored: its scope now, the backup's columns, its staging table."""

    def __init__(self, scope: TableScope, backup_columns: list[str], tenant: sql.Composable = TENANT) -> None:
        self.scope = scope
        self.name = scope.table
        current = {c.name: c for c in scope.columns}
        self.backup_columns = backup_columns
        self.dropped = [c for c in backup_columns if c not in current or current[c].generated]
        self.common = [c for c in backup_columns if c not in self.dropped]
        self.added = [c.name for c in scope.columns if not c.generated and c.name not in backup_columns]
        self.types = {c.name: c.type for c in scope.columns}
        self.stage = stage_name(scope.table)
        self.tenant = tenant
        # Matched by key when the table has one and the backup carries all of it; else as rows.
        self.pk = list(scope.key) if scope.key and all(c in self.common for c in scope.key) else []
        # The staging table holds only the backup's rows that differ from the tenant's, and the
        # table's delta names the rest (restore/fingerprint.py); else every row of the backup.
        self.partial = False
        self.staged_rows: int | None = None  # how many rows of the backup are in the staging table

    @property
    def keyed(self) -> bool:
        return bool(self.pk)

    @property
    def matched_by(self) -> str:
        return f"key ({', '.join(self.pk)})" if self.keyed else "rows"

    def target(self) -> sql.Composed:
        return self.scope.ident()

    def stage_ident(self, suffix: str = "") -> sql.Composed:
        """``pg_temp."<staging table>"``; a ``suffix`` names another temporary table of this table."""
        return sql.SQL("{}.{}").format(sql.Identifier("pg_temp"), sql.Identifier(stage_name(self.name + suffix)))

    def delta_ident(self) -> sql.Composed:
        """The table's delta: the keys a restore by delta writes or keeps (restore/delta.py)."""
        return self.stage_ident("_delta")

    def cols(self, names: list[str], alias: str | None = None) -> sql.Composable:
        if alias is None:
            return sql.SQL(", ").join(sql.Identifier(c) for c in names)
        return sql.SQL(", ").join(sql.Identifier(alias, c) for c in names)

    def comparable(self, alias: str) -> sql.Composed:
        """The common columns of ``alias`` as what tells two rows apart: their text, as COPY prints
        each value. Not their values' ``=``, which holds between ``0`` and ``-0``, ``1.0`` and
        ``1.00``, ``'1 day'`` and ``'24 hours'``, jsonb ``1.0`` and ``1.00``: rows a restore must
        give back as the backup printed them."""
        return self.row_text(alias)

    def same_values(self, left: str, right: str) -> sql.Composed:
        """``left``'s common columns equal ``right``'s by their types' ``=`` (text where a type has
        none): cheaper than :meth:`comparable`, and enough where ``left`` was written from
        ``right`` (a check of the apply's own writes, whose other writers it counts apart)."""
        cols = [
            (sql.SQL("{}::text") if self.types[c].split("(")[0].split("[")[0] in _NO_EQUALITY else sql.SQL("{}"))
            for c in self.common
        ]
        return sql.SQL("ROW({}) IS NOT DISTINCT FROM ROW({})").format(
            sql.SQL(", ").join(f.format(sql.Identifier(left, c)) for f, c in zip(cols, self.common, strict=True)),
            sql.SQL(", ").join(f.format(sql.Identifier(right, c)) for f, c in zip(cols, self.common, strict=True)),
        )

    def row_text(self, alias: str) -> sql.Composed:
        """The common columns of ``alias`` as one text value: a row of a keyless table, hashable,
        equal exactly when COPY would print the two rows alike."""
        return sql.SQL("ROW({})::text").format(self.cols(self.common, alias))

    def key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, c), sql.Identifier(right, c)) for c in self.pk
        )

    def same_row(self, left: str, right: str) -> sql.Composable:
        """``left`` and ``right`` are the same row: by key, or (keyless) by their text."""
        if self.keyed:
            return self.key_match(left, right)
        return sql.SQL("{} = {}").format(self.row_text(left), self.row_text(right))

    def identity(self) -> list[str]:
        """Columns that tell one row of the table from another: the key, else every common column."""
        return self.pk if self.keyed else self.common

    def current(self, columns: list[str]) -> sql.Composed:
        """The tenant's current rows: ``SELECT columns FROM target WHERE <tenant filter>``."""
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            self.cols(columns), self.target(), tenant_filter(self.scope, self.tenant)
        )

    def same_version(self, alias: str) -> sql.Composed:
        """Row ``alias`` is one of the tenant's rows, as the statement's snapshot saw it: its key and
        its ``xmin`` among theirs. A row another session moved to another tenant or rewrote while
        the statement waited for its lock is a newer version (READ COMMITTED re-checks this on
        it): left alone, for the check before commit to name."""
        return sql.SQL("({}, {}.xmin::text::bigint) IN (SELECT {}, xmin::text::bigint FROM ({}) v)").format(
            self.cols(self.pk, alias), sql.Identifier(alias), self.cols(self.pk), self.current([*self.pk, "xmin"])
        )

    def staged(self) -> sql.Composed:
        return sql.SQL("SELECT * FROM {}").format(self.stage_ident())

    def multiset_surplus(self, rows: sql.Composable, than: sql.Composable, select: list[str]) -> sql.Composed:
        """The rows of ``rows`` beyond as many copies as ``than`` holds of each (multiset
        difference, duplicates included), as ``SELECT <select> FROM …`` (alias ``d``)."""
        return sql.SQL(
            "SELECT {cols} FROM (SELECT r.*, {text} AS tenant_backup_r, row_number() OVER "
            "(PARTITION BY {text}) AS tenant_backup_n FROM ({rows}) r) d "
            "LEFT JOIN (SELECT {b_text} AS r, count(*) AS n FROM ({than}) b GROUP BY 1) b "
            "ON b.r = d.tenant_backup_r WHERE d.tenant_backup_n > coalesce(b.n, 0)"
        ).format(
            cols=self.cols(select, "d") if select else sql.SQL("1"),
            text=self.row_text("r"),
            rows=rows,
            b_text=self.row_text("b"),
            than=than,
        )

    def create_stage(self) -> sql.Composed:
        """The staging table, typed like the target (a column dropped since the backup as text)."""
        select = sql.SQL(", ").join(
            sql.SQL("NULL::text AS {}").format(sql.Identifier(c)) if c in self.dropped else sql.Identifier(c)
            for c in self.backup_columns
        )
        return sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(self.stage), select, self.target()
        )

    def count_current(self) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM ({}) c").format(self.current(["ctid"]))

    def count_inserts(self) -> sql.Composed:
        """How many staged rows an apply would insert (missing keys, or missing copies of a row)."""
        if not self.keyed:
            surplus = self.multiset_surplus(self.staged(), self.current(self.common), [])
            return sql.SQL("SELECT count(*) FROM ({}) x").format(surplus)
        return sql.SQL("SELECT count(*) FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})").format(
            self.stage_ident(), self.target(), self.key_match("x", "s")
        )

    def count_foreign_keys(self) -> sql.Composed:
        """Staged rows whose key is held by a row that is not the tenant's (another tenant's)."""
        return sql.SQL(
            "SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {target} x WHERE {match_x}) "
            "AND NOT EXISTS (SELECT 1 FROM ({current}) c WHERE {match_c})"
        ).format(
            stage=self.stage_ident(),
            target=self.target(),
            match_x=self.key_match("x", "s"),
            current=self.current(self.pk),
            match_c=self.key_match("c", "s"),
        )

    def count_missing(self) -> sql.Composed:
        """Staged rows that the tenant's rows lack (``EXCEPT ALL``: duplicates count)."""
        current = sql.SQL("SELECT {} FROM ({}) c").format(self.comparable("c"), self.current(self.common))
        staged = sql.SQL("SELECT {} FROM {} c").format(self.comparable("c"), self.stage_ident())
        return sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) d").format(staged, current)


def insert_missing(t: RestoreTable, nulled: Collection[str] = ()) -> sql.Composed:
    """Insert the staged rows the table lacks (by key, or the missing copies of each row);
    columns in ``nulled`` go in NULL (a foreign key set afterwards)."""
    values = sql.SQL(", ").join(sql.SQL("NULL") if c in nulled else sql.Identifier("s", c) for c in t.common)
    if not t.keyed:
        return sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM ({}) s").format(
            t.target(), t.cols(t.common), values, t.multiset_surplus(t.staged(), t.current(t.common), t.common)
        )
    return sql.SQL(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} x WHERE {})"
    ).format(t.target(), t.cols(t.common), values, t.stage_ident(), t.target(), t.key_match("x", "s"))


def update_changed(t: RestoreTable) -> sql.Composed | None:
    """Update the tenant's rows whose key is staged and whose values differ (None: nothing to update)."""
    non_key = [c for c in t.common if c not in t.pk]
    if not t.keyed or not non_key:
        return None  # rows without a key are inserted or deleted, never updated
    return sql.SQL(
        "UPDATE {target} x SET ({cols}) = ROW({vals}) FROM {stage} s WHERE {match} "
        "AND {version} AND {cmp_x} IS DISTINCT FROM {cmp_s}"
    ).format(
        target=t.target(),
        cols=t.cols(non_key),
        vals=t.cols(non_key, "s"),
        stage=t.stage_ident(),
        match=t.key_match("x", "s"),
        version=t.same_version("x"),
        cmp_x=t.comparable("x"),
        cmp_s=t.comparable("s"),
    )


def delete_surplus(t: RestoreTable) -> sql.Composed:
    """Delete the tenant's rows the backup does not have (by key, or the surplus copies of a row)."""
    if not t.keyed:
        doomed = t.multiset_surplus(t.current(["tableoid", "ctid", *t.common]), t.staged(), ["tableoid", "ctid"])
        return sql.SQL("DELETE FROM {} x USING ({}) d WHERE x.tableoid = d.tableoid AND x.ctid = d.ctid").format(
            t.target(), doomed
        )
    return sql.SQL("DELETE FROM {} x WHERE {} AND NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        t.target(), t.same_version("x"), t.stage_ident(), t.key_match("s", "x")
    )


def dangling(fk: ForeignKey, rows: sql.Composable, select: sql.Composable) -> sql.Composed:
    """``SELECT <select>`` over ``rows`` (aliased ``s``, holding ``fk``'s columns) whose foreign key
    ``fk`` is set but finds no row in the table it references."""
    present = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("s", c)) for c in fk.columns)
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("p", r), sql.Identifier("s", c))
        for c, r in zip(fk.columns, fk.ref_columns, strict=True)
    )
    return sql.SQL("SELECT {} FROM {} s WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        select, rows, present, fk.parent(), match
    )


def doomed_keys(fk: ForeignKey, parent: RestoreTable) -> sql.Composed:
    """``SELECT <fk's referenced columns>`` of the rows of ``parent`` that a replace would delete
    (the tenant's rows the backup does not have: of a partly staged table, its delta's ``d``)."""
    columns = sorted(set(parent.identity()) | set(fk.ref_columns))
    if parent.partial:
        return sql.SQL("SELECT {} FROM ({}) c WHERE ({}) IN (SELECT {} FROM {} WHERE {} = 'd')").format(
            parent.cols(list(fk.ref_columns), "c"),
            parent.current(columns),
            parent.cols(parent.pk, "c"),
            parent.cols(parent.pk),
            parent.delta_ident(),
            ACTION,
        )
    return sql.SQL("SELECT {} FROM ({}) c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        parent.cols(list(fk.ref_columns), "c"), parent.current(columns), parent.stage_ident(), parent.same_row("s", "c")
    )


def referencing(fk: ForeignKey, keys: sql.Composable, select: sql.Composable) -> sql.Composed:
    """``SELECT <select>`` of the rows of ``fk``'s table whose foreign key is among ``keys``."""
    child = sql.SQL(", ").join(sql.Identifier(c) for c in fk.columns)
    return sql.SQL("SELECT {} FROM {} WHERE ({}) IN ({})").format(select, fk.child(), child, keys)


def doomed_references(fk: ForeignKey, parent: RestoreTable) -> sql.Composed:
    """``SELECT count(*)`` of the rows of ``fk``'s table that reference rows of ``parent`` that a
    replace would delete."""
    return referencing(fk, doomed_keys(fk, parent), sql.SQL("count(*)"))
