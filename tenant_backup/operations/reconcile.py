"""Storage against the ledger: what ``reconcile`` finds, and what ``--clean`` removes.

Every object under the storage root is one of:

- **recorded**: a completed ledger row names it;
- **an orphan**: under this database's folder (``<db segment>/``, see
  :class:`~tenant_backup.db.DatabaseOwner`) and no completed row names it: what a killed or
  failed run left (its ``.partial`` object, or its artifact before the row was completed), or a
  copied file. A tenant's orphans are decided while holding that tenant's lock
  (``pg_try_advisory_lock``, released right after): a run holds it from start to end, so when it
  is free no run of the tenant is writing, and the ledger, read again under it, is final. When a
  run holds it, the objects are **busy** and left alone;
- **not ours**: anything else (another database's folder, the layout before databases had
  folders, a stranger's file): reported, never touched.

Completed rows whose object is gone are **missing**. ``clean`` deletes the orphans, aborts the
incomplete S3 multipart uploads in our folder (same lock rule) and marks missing rows failed.
Dead spool folders of this machine are removed in every case (see :mod:`tenant_backup.spool`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
from pydantic import BaseModel

from tenant_backup import ledger
from tenant_backup.db import connect, read_owner
from tenant_backup.errors import ConfigurationError
from tenant_backup.locks import tenant_lock_if_free
from tenant_backup.segments import decode_segment
from tenant_backup.settings import Settings
from tenant_backup.spool import sweep
from tenant_backup.storage import Storage

__all__ = ["ReconcileReport", "reconcile", "tenant_of"]

T = TypeVar("T")


class ReconcileReport(BaseModel):
    orphans: list[str]  # keys under our folder that no completed row names (deleted with clean)
    missing: list[str]  # ids of completed backups whose object is gone (marked failed with clean)
    not_ours: list[str] = []  # keys outside our folder that no row names: never touched
    busy: list[str] = []  # keys of tenants whose lock a run holds: left for a later reconcile
    uploads: list[str] = []  # keys of incomplete multipart uploads of dead runs (aborted with clean)
    spools_removed: list[str] = []  # dead runs' spool folders on this machine
    cleaned: bool


def tenant_of(key: str, database_segment: str) -> str | None:
    """The tenant whose folder ``key`` lies in, under ``<database_segment>/<tenant segment>/``;
    None when ``key`` is elsewhere or its segment is not one we write."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != database_segment:
        return None
    try:
        return decode_segment(parts[1])
    except ConfigurationError:
        return None


def reconcile(db_url: str, settings: Settings, storage: Storage, *, clean: bool = False) -> ReconcileReport:
    """Compare storage with the ledger (see the module's docstring); with ``clean``, act on it."""
    spools = sweep(settings.spool_dir)
    objects = storage.list()  # listed before the ledger is read: a row completed since then is seen
    schema = settings.ledger_schema
    with connect(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, schema)
        own = read_owner(conn).segment
        rows = ledger.list_backups(conn, schema, limit=None)
        keys = {r.id: key for r in rows if r.storage_path and (key := storage.key_in(r.storage_path)) is not None}
        recorded = {keys[r.id] for r in rows if r.status == "completed" and r.id in keys}
        unrecorded = [key for key in objects if key not in recorded]
        not_ours = [key for key in unrecorded if not key.startswith(own + "/")]
        ours = [key for key in unrecorded if key.startswith(own + "/")]
        orphans, busy = _dead(conn, schema, storage, own, ours, lambda key: key, storage.remove if clean else None)
        dead_uploads, busy_uploads = _dead(
            conn,
            schema,
            storage,
            own,
            storage.uploads(own),
            lambda upload: upload.key,
            storage.abort_upload if clean else None,
        )
        present = set(objects)
        missing = [
            r
            for r in rows
            if r.status == "completed"
            and r.id in keys
            and keys[r.id] not in present
            and not storage.exists(keys[r.id])  # written after the listing
        ]
        if clean:
            with conn.transaction():
                for row in missing:
                    ledger.mark_missing(conn, schema, row.id)
    return ReconcileReport(
        orphans=orphans,
        missing=[r.id for r in missing],
        not_ours=not_ours,
        busy=sorted(busy + [u.key for u in busy_uploads]),
        uploads=[u.key for u in dead_uploads],
        spools_removed=spools,
        cleaned=clean,
    )


def _dead(
    conn: psycopg.Connection,
    schema: str,
    storage: Storage,
    own: str,
    items: list[T],
    key_of: Callable[[T], str],
    remove: Callable[[T], None] | None,
) -> tuple[list[T], list[T]]:
    """Split ``items`` (in our folder, named by no completed row when listed) into those of dead
    runs and those of tenants whose lock a run holds; ``remove`` the dead ones, under the lock."""
    by_tenant: dict[str | None, list[T]] = {}
    for item in items:
        by_tenant.setdefault(tenant_of(key_of(item), own), []).append(item)
    dead: list[T] = []
    busy: list[T] = []
    for tenant, found in by_tenant.items():
        if tenant is None:  # not a tenant folder we write: no run can be writing there
            chosen = found
            _remove_all(chosen, remove)
        else:
            with tenant_lock_if_free(conn, tenant) as free:
                if not free:
                    busy += found
                    continue
                recorded = ledger.completed_paths(conn, schema, [storage.full_url(key_of(i)) for i in found])
                chosen = [i for i in found if storage.full_url(key_of(i)) not in recorded]
                _remove_all(chosen, remove)
        dead += chosen
    return sorted(dead, key=key_of), sorted(busy, key=key_of)


def _remove_all(items: list[T], remove: Callable[[T], None] | None) -> None:
    if remove is not None:
        for item in items:
            remove(item)
