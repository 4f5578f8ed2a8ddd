"""SQL builders: pure functions that return ``psycopg.sql.Composed`` values.

Identifiers only go through :class:`psycopg.sql.Identifier`; the tenant id is always the
named parameter ``%(tenant)s``.
"""

from __future__ import annotations

from psycopg import sql

from tenant_backup.tenancy.catalog import Hop, TableScope, qualified

__all__ = ["qualified", "select_tenant_rows", "tenant_filter"]


TENANT = sql.Placeholder("tenant")


def tenant_filter(scope: TableScope, value: sql.Composable = TENANT, alias: str | None = None) -> sql.Composable:
    """WHERE condition selecting the tenant's rows of ``scope.table``.

    Along a foreign-key path each hop is a semi-join, innermost last::

        vente_id IN (SELECT id FROM ventes WHERE etablissement_id = %(tenant)s)

    A composite key compares rows: ``(vente_id, shop_id) IN (SELECT id, shop_id FROM …)``. Each
    subquery has one table, so unqualified column names always resolve to it; ``alias`` qualifies
    the columns of the table itself (an UPDATE … FROM or a DELETE … USING names other tables).
    ``value`` is the ``%(tenant)s`` parameter, or a literal in a SQL artifact.
    """
    column = _ident(None if scope.path else alias, scope.tenant_column)
    condition: sql.Composable = sql.SQL("{} = {}").format(column, value)
    for depth, hop in reversed(list(enumerate(scope.path))):
        condition = _semi_join(hop, condition, alias if depth == 0 else None)
    return condition


def _ident(alias: str | None, column: str) -> sql.Identifier:
    return sql.Identifier(alias, column) if alias else sql.Identifier(column)


def _semi_join(hop: Hop, inner: sql.Composable, alias: str | None = None) -> sql.Composable:
    columns = sql.SQL(", ").join(_ident(alias, c) for c in hop.columns)
    return sql.SQL("{} IN (SELECT {} FROM {} WHERE {})").format(
        sql.SQL("({})").format(columns) if len(hop.columns) > 1 else columns,
        sql.SQL(", ").join(sql.Identifier(c) for c in hop.ref_columns),
        hop.parent(),
        inner,
    )


def select_tenant_rows(scope: TableScope, only: sql.Composable | None = None) -> sql.Composed:
    """``SELECT <copied columns> FROM <table> WHERE <tenant filter> [AND <only>]``."""
    condition = tenant_filter(scope) if only is None else sql.SQL("{} AND {}").format(tenant_filter(scope), only)
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in scope.copied_columns),
        scope.ident(),
        condition,
    )
