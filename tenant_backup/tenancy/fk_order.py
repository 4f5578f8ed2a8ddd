"""Foreign-key order for a restore (pure functions).

Inserts go parents first, deletes children first. A self-reference, or a cycle between tables,
cannot be ordered by table: such a foreign key is *broken* — its columns are inserted NULL and
set afterwards (Jailer's method) — which needs them nullable, unless the constraint is deferrable
(then ``SET CONSTRAINTS ALL DEFERRED`` is enough). A cycle of NOT NULL, non-deferrable keys is
refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenant_backup.errors import RestoreRefusedError
from tenant_backup.tenancy.catalog import ForeignKey

__all__ = ["RestoreOrder", "restore_order"]


@dataclass(frozen=True)
class RestoreOrder:
    tables: tuple[str, ...]  # parents first
    broken: tuple[ForeignKey, ...]  # inserted NULL, then set


def restore_order(tables: list[str], foreign_keys: tuple[ForeignKey, ...]) -> RestoreOrder:
    """Order ``tables`` parents first; break self-references and cycles on nullable keys."""
    wanted = set(tables)
    edges = [fk for fk in foreign_keys if fk.table in wanted and fk.ref_table in wanted and not fk.deferrable]
    broken = [fk for fk in edges if fk.table == fk.ref_table]
    live = [fk for fk in edges if fk.table != fk.ref_table]
    while True:
        order, cycle = _toposort(tables, live)
        if not cycle:
            return RestoreOrder(tables=tuple(order), broken=tuple(broken))
        # Break one nullable edge inside the remaining cycle, deterministically.
        candidates = sorted(
            (fk for fk in live if fk.table in cycle and fk.ref_table in cycle and not fk.not_null), key=lambda f: f.name
        )
        if not candidates:
            raise RestoreRefusedError(
                f"tables {', '.join(sorted(cycle))} reference each other through NOT NULL, non-deferrable foreign "
                "keys: no insert order exists; make one of the keys DEFERRABLE or nullable"
            )
        broken.append(candidates[0])
        live.remove(candidates[0])


def _toposort(tables: list[str], edges: list[ForeignKey]) -> tuple[list[str], set[str]]:
    """Kahn's algorithm, stable in the given table order; returns the order and what is left."""
    parents: dict[str, set[str]] = {t: set() for t in tables}
    for fk in edges:
        parents[fk.table].add(fk.ref_table)
    order: list[str] = []
    left = list(tables)
    while left:
        ready = [t for t in left if not (parents[t] - set(order))]
        if not ready:
            return order, set(left)
        order.extend(ready)
        left = [t for t in left if t not in ready]
    return order, set()
