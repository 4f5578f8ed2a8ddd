"""What each ``tenant-backup`` command does; :mod:`tenant_backup.cli.parser` parses the arguments.

Each ``cmd_*`` takes the parsed arguments and returns the JSON object that ``--json`` prints;
without ``--json`` it prints a readable summary itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tenant_backup.errors import LedgerError, TenantBackupError


def _run_flow(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Run a flow in this process with the run heartbeat off (it costs ~1 s at exit)."""
    import gc

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # Prefect's import leaves a large heap; move it out of the cyclic GC's sight so that
    # collections during extraction stay cheap (measured: -15 % CPU on a 3 M-row backup).
    gc.freeze()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return fn(**kwargs)


def cmd_migrate(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup import ledger
    from tenant_backup.db import connect
    from tenant_backup.settings import get_settings

    settings = get_settings()
    with connect(_require(args.db or settings.database_url, "--db")) as conn:
        ledger.migrate(conn, settings.ledger_schema)
    return {"status": "migrated", "schema": settings.ledger_schema}


def _require(value: str | None, flag: str) -> str:
    if not value:
        raise TenantBackupError(f"{flag} is required (or set TENANT_BACKUP_{flag.strip('-').upper()}_URL)")
    return value


class _Bar:
    """A rich progress bar on stderr fed by extraction progress events."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            console=__import__("rich.console", fromlist=["Console"]).Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("backing up", total=None)

    def __call__(self, event: Any) -> None:
        if event.expected_rows:
            self.progress.update(self.task, total=event.expected_rows)
        self.progress.update(self.task, advance=event.rows, description=f"backing up {event.table}".strip())


def cmd_backup(args: argparse.Namespace) -> dict[str, Any]:
    from flows.backup import backup_tenant
    from tenant_backup import progress

    bar = _Bar() if (not args.json and sys.stderr.isatty()) else None
    if bar:
        progress.subscribe(bar)
        bar.progress.start()
    try:
        result = _run_flow(
            backup_tenant,
            tenant_id=args.tenant,
            categories=args.category or None,
            format=args.format,
            compression=args.compression,
            compression_level=args.compression_level,
            requested_by=args.requested_by,
            profile=None if args.tenant_column else (args.profile or "pos"),
            tenant_column=args.tenant_column,
            force=args.force,
            allow_empty=args.allow_empty,
            name=args.name,
        )
    finally:
        if bar:
            bar.progress.stop()
            progress.unsubscribe(bar)
    out: dict[str, Any] = result.model_dump(mode="json")
    if not args.json:
        print(
            f"backup {out['backup_id']} of tenant {out['tenant_id']} ({out['tenant_name'] or '-'}): "
            f"{out['record_count']:,} rows in {len(out['tables'])} tables, {out['file_size']:,} bytes, "
            f"{out['seconds']:.2f} s\n  artifact: {out['storage_path']}\n  checksum: {out['checksum']}"
        )
    return out


def cmd_restore(args: argparse.Namespace) -> dict[str, Any]:
    from flows.restore import restore_backup

    result = _run_flow(
        restore_backup,
        backup_id=args.backup_id,
        confirm=args.confirm,
        requested_by=args.requested_by,
        mode=args.mode,
        dry_run=args.dry_run,
        tables=args.table or None,
        target_tenant=args.target_tenant,
        require_approval=args.require_approval,
    )
    out: dict[str, Any] = result.model_dump(mode="json")
    if not args.json:
        _print_counts(out, "dry run: would change" if args.dry_run else "restored")
    return out


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from flows.restore import verify_backup

    out: dict[str, Any] = _run_flow(verify_backup, backup_id=args.backup_id).model_dump(mode="json")
    if not args.json:
        _print_counts(out, "verified (checksums, manifest, and a rolled-back test restore); a restore would change")
    return out


def _print_counts(out: dict[str, Any], what: str) -> None:
    print(f"backup {out['backup_id']} -> tenant {out['tenant_id']} ({out['mode']}), {what}:")
    for table, c in out["tables"].items():
        print(f"  {table:<24} {c['rows']:>10,} rows  +{c['inserted']:,} ~{c['updated']:,} -{c['deleted']:,}")
    for effect in out["outside"]:
        print(
            f"  outside: {effect['rows']:,} row(s) of {effect['table']} "
            f"via {effect['foreign_key']} ({effect['action']})"
        )
    for m in out.get("missing_references", []):
        print(
            f"  refused: {m['rows']:,} row(s) of {m['table']} reference rows of {m['references']} that this database "
            f"lacks ({m['foreign_key']}, e.g. {', '.join(m['examples'])})"
        )
    for table, cols in out["dropped_columns"].items():
        print(f"  columns dropped since the backup, not restored: {table}: {', '.join(cols)}")
    print(f"  app triggers: {out['triggers']}; {out['seconds']:.2f} s")


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from deployments import serve_all

    serve_all(timezone=args.timezone, backup_cron=args.backup_cron, profile=args.profile)
    return {"status": "stopped"}


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup import ledger
    from tenant_backup.db import connect
    from tenant_backup.settings import get_settings

    settings = get_settings()
    where = ledger.BackupFilter(
        tenant_id=args.tenant,
        status=args.status,
        backup_type=args.backup_type,
        format=args.format,
        since=args.since,
        until=args.until,
    )
    with connect(_require(args.db or settings.database_url, "--db")) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        rows = ledger.list_backups(conn, settings.ledger_schema, limit=args.limit, offset=args.offset, where=where)
        total = ledger.count_backups(conn, settings.ledger_schema, where)
    out = {
        "backups": [r.model_dump(mode="json") for r in rows],
        "total": total,
        "limit": args.limit,
        "offset": args.offset,
        "next_offset": args.offset + len(rows) if args.offset + len(rows) < total else None,
    }
    if not args.json:
        print(f"{total} backup(s); showing {args.offset + 1 if rows else 0}-{args.offset + len(rows)}")
        for r in rows:
            size = f"{r.file_size:,} B" if r.file_size is not None else "-"
            print(
                f"{r.created_at:%Y-%m-%d %H:%M:%S}  {r.id}  {r.tenant_id}  {r.status:<11} {r.type:<7} "
                f"{r.record_count or 0:>10,} rows  {size:>14}  {r.storage_path or r.error_message or ''}"
            )
    return out


def _plain() -> tuple[str, Any, Any]:
    """Database URL, settings and storage for the commands that run no flow."""
    from tenant_backup.settings import get_settings
    from tenant_backup.storage import Storage

    settings = get_settings()
    storage = Storage(_require(settings.storage_url, "--storage"), settings.storage_options)
    return _require(settings.database_url, "--db"), settings, storage


def cmd_url(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.operations.maintenance import download_url

    db_url, settings, storage = _plain()
    url = download_url(db_url, settings, storage, args.backup_id, args.expires)
    if not args.json:
        print(url)
    return {"backup_id": args.backup_id, "url": url, "expires_in": args.expires}


def cmd_delete(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.operations.maintenance import delete_backup

    db_url, settings, storage = _plain()
    out = delete_backup(db_url, settings, storage, args.backup_id, confirm=args.confirm, requested_by=args.requested_by)
    if not args.json:
        left = "; the object belongs to another database and was left" if out["not_ours"] else ""
        print(f"deleted backup {args.backup_id} ({out['storage_path'] or 'no artifact'}){left}")
    return out


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    from flows.maintenance import prune_backups

    report = _run_flow(
        prune_backups,
        tenant_id=args.tenant,
        dry_run=args.dry_run,
        max_backups=args.max_backups,
        max_age_days=args.max_age_days,
        keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly,
        keep_monthly=args.keep_monthly,
    )
    out: dict[str, Any] = report.model_dump(mode="json")
    if not args.json:
        verb = "would delete" if args.dry_run else "deleted"
        for d in report.decisions:
            mark = "keep  " if d.keep else ("DRY   " if args.dry_run else "DELETE")
            left = "  (ledger row only: the object is not ours)" if d.backup_id in report.not_ours else ""
            print(f"{mark} {d.created_at:%Y-%m-%d %H:%M}  {d.backup_id}  {d.tenant_id}  {d.reason}{left}")
        print(f"{len(report.to_delete)} {verb}, {len(report.decisions) - len(report.to_delete)} kept")
    return out


def cmd_reconcile(args: argparse.Namespace) -> dict[str, Any]:
    from flows.maintenance import reconcile_storage

    out: dict[str, Any] = _run_flow(reconcile_storage, clean=args.clean).model_dump(mode="json")
    if not args.json:
        for label, field in (
            ("objects of this database without a ledger row", "orphans"),
            ("incomplete uploads of dead runs", "uploads"),
            ("completed backups whose object is gone", "missing"),
            ("left alone: a run of the tenant holds its lock", "busy"),
            ("not ours (another database's, or an older layout): never touched", "not_ours"),
            ("dead spool folders removed", "spools_removed"),
        ):
            print(f"{label}: {len(out[field])}")
            print("\n".join(f"  {item}" for item in out[field]) or "  -")
        if args.clean:
            print("cleaned: orphans deleted, their uploads aborted, rows without an object marked failed")
        elif out["orphans"] or out["uploads"] or out["missing"]:
            print("run again with --clean to delete the orphans, abort the uploads and mark the rows failed")
    return out


def cmd_sync_schedules(args: argparse.Namespace) -> dict[str, Any]:
    from flows.maintenance import sync_schedules

    report = _run_flow(sync_schedules, deployment=args.deployment, timezone=args.timezone, profile=args.profile)
    out: dict[str, Any] = report.model_dump(mode="json")
    if not args.json:
        for c in report.changes:
            print(f"{c.action:<9} {c.slug}  {c.cron or ''}  next: {c.next_run or '-'}")
        for bad in report.invalid:
            print(f"skipped   row {bad.id} ({bad.nom}): {bad.error}")
    return out


def cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup import ledger
    from tenant_backup.artifact.dataframes import open_backup
    from tenant_backup.db import connect
    from tenant_backup.settings import get_settings

    settings = get_settings()
    with connect(_require(args.db or settings.database_url, "--db")) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        row = ledger.get_backup(conn, settings.ledger_schema, args.backup_id)
    if row.status != "completed" or not row.storage_path:
        raise LedgerError(f"backup {args.backup_id} is {row.status}: it has no artifact to show", backup_id=row.id)
    backup = open_backup(row.storage_path, storage_options=settings.storage_options, checksum=row.checksum)
    if not args.table:
        tables: dict[str, dict[str, Any]] = {
            name: {"rows": t.rows, "columns": [c.name for c in t.columns]} for name, t in backup.manifest.tables.items()
        }
        if not args.json:
            print(
                f"backup {row.id} of tenant {row.tenant_id}, {backup.manifest.artifact_format}, {backup.manifest.date}:"
            )
            for name, t in tables.items():
                print(f"  {name:<24} {t['rows']:>10,} rows  {', '.join(t['columns'])}")
        return {"backup_id": row.id, "tables": tables}
    frame = backup.table(args.table, head=args.head)
    if not args.json:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(frame.to_string(max_rows=args.head or 60))
    return {
        "backup_id": row.id,
        "table": args.table,
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
        "rows": [{c: _jsonable(v) for c, v in row.items()} for row in frame.astype(object).to_dict("records")],
    }


def _jsonable(value: Any) -> Any:
    """A DataFrame cell for JSON: NULL as null, bytea as PostgreSQL's hex form, the rest as JSON
    values where they are ones (numbers, booleans, parsed json), else as text."""
    import math

    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str, dict, list)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
