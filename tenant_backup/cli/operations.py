"""The commands that look after stored backups: migrate, list, url, delete, prune, reconcile,
sync-schedules, serve. Like commands.py, each returns what ``--json`` prints."""

from __future__ import annotations

import argparse
from typing import Any

from tenant_backup.cli.commands import resolve_id
from tenant_backup.cli.execute import local_runner, prefect_api, require_prefect_api, run_flow
from tenant_backup.cli.output import count, table
from tenant_backup.results import human_size

__all__ = [
    "cmd_delete",
    "cmd_grants",
    "cmd_list",
    "cmd_migrate",
    "cmd_prune",
    "cmd_reconcile",
    "cmd_serve",
    "cmd_sync_schedules",
    "cmd_url",
]


def cmd_migrate(args: argparse.Namespace) -> dict[str, Any]:
    from blocks import database_url
    from tenant_backup import ledger
    from tenant_backup.db import connect
    from tenant_backup.settings import get_settings

    settings = get_settings()
    views: list[str] = []
    with connect(database_url()) as conn:
        before = ledger.migrate(conn, settings.ledger_schema)
        database = conn.info.dbname
        if args.app_policies:
            from tenant_backup.backup.steps import resolve_profile
            from tenant_backup.operations.app_policies import apply_app_policies

            profile = resolve_profile(args.profile or "pos", None)
            views = apply_app_policies(conn, profile, settings.ledger_schema, args.app_schema, args.app_role)
    now, schema = ledger.LEDGER_VERSION, settings.ledger_schema
    if before is None:
        did = f"created the ledger (schema {schema}, version {now}) in database {database}"
    elif before == now:
        did = f"the ledger of database {database} (schema {schema}) is up to date (version {now})"
    else:
        did = f"upgraded the ledger of database {database} (schema {schema}) from version {before} to {now}"
    if not args.json:
        print(did)
        if views:
            print(
                f"the app's views, filtered by the JWT's user under profile {args.profile or 'pos'}'s rule, for role "
                f"{args.app_role}: {', '.join(views)}"
            )
    return {
        "status": "migrated",
        "schema": settings.ledger_schema,
        "version": now,
        "previous_version": before,
        "app_views": views,
    }


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    require_prefect_api("serve")
    from deployments import serve_all

    serve_all(timezone=args.timezone, backup_cron=args.backup_cron, profile=args.profile)
    return {"status": "stopped"}


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from blocks import database_url
    from tenant_backup import ledger
    from tenant_backup.db import connect
    from tenant_backup.ledger.lookup import require_ledger
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
    with connect(database_url()) as conn:
        require_ledger(conn, settings.ledger_schema)
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
        shown = f"; showing {args.offset + 1}-{args.offset + len(rows)}" if rows and len(rows) < total else ""
        print(f"{count(total, 'backup')}{shown}")
        if rows:
            print(
                table(
                    [
                        "created (UTC)",
                        "id",
                        "tenant",
                        "name",
                        "status",
                        "type",
                        "format",
                        "rows",
                        "size",
                        "enc",
                        "verified",
                    ],
                    [
                        [
                            f"{r.created_at:%Y-%m-%d %H:%M}",
                            r.id[:8],
                            r.tenant_id,
                            str(r.metadata.get("tenant_name") or "-"),
                            r.status,
                            r.type,
                            r.format,
                            f"{r.record_count:,}" if r.record_count is not None else "-",
                            human_size(r.file_size),
                            "age" if r.encrypted_to else "-",
                            r.verification or "-",
                        ]
                        for r in rows
                    ],
                    right=(7, 8),
                )
            )
            print("(an id prefix is enough wherever a command takes a backup id)")
    return out


def _plain() -> tuple[str, Any, Any]:
    """Database URL, settings and storage for the commands that run no sequence."""
    from blocks import database_url, open_storage
    from tenant_backup.settings import get_settings

    return database_url(), get_settings(), open_storage()


def cmd_grants(args: argparse.Namespace) -> dict[str, Any]:
    from blocks import database_url
    from tenant_backup.backup.steps import resolve_profile
    from tenant_backup.db import connect
    from tenant_backup.operations.grants import grant_statements
    from tenant_backup.settings import get_settings
    from tenant_backup.tenancy.catalog import read_catalog

    settings = get_settings()
    profile = resolve_profile(None if args.tenant_column else args.profile or "pos", args.tenant_column)
    with connect(database_url()) as conn:
        catalog = read_catalog(conn, profile.db_schema, profile.schemas)
        statements = grant_statements(
            conn,
            catalog,
            profile,
            args.category,
            args.role,
            restore=args.restore,
            ledger_schema=settings.ledger_schema,
        )
        text = [s.as_string(conn) + ";" for s in statements]
        if args.apply:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
    what = "back up and restore" if args.restore else "back up"
    if not args.json:
        print(f"-- the least role {args.role} needs to {what} the tenants of profile {profile.name}")
        print("\n".join(text))
        if args.apply:
            print(f"-- applied: role {args.role} now holds these")
    return {"role": args.role, "restore": args.restore, "applied": args.apply, "statements": text}


def cmd_url(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.operations.maintenance import download_url

    db_url, settings, storage = _plain()
    backup_id = resolve_id(args.backup_id)
    url = download_url(db_url, settings, storage, backup_id, args.expires)
    if not args.json:
        print(url)
    return {"backup_id": backup_id, "url": url, "expires_in": args.expires}


def cmd_delete(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.operations.maintenance import delete_backup

    db_url, settings, storage = _plain()
    backup_id = resolve_id(args.backup_id)
    out = delete_backup(db_url, settings, storage, backup_id, confirm=args.confirm, requested_by=args.requested_by)
    if not args.json:
        left = "; the object belongs to another database and was left" if out["not_ours"] else ""
        print(f"deleted backup {backup_id} ({out['storage_path'] or 'no artifact'}){left}")
    return out


def cmd_rewrap_keys(args: argparse.Namespace) -> dict[str, Any]:
    from blocks import database_url, identities
    from tenant_backup.backup.recipients import operator_recipients
    from tenant_backup.operations.keyring import rewrap_keys
    from tenant_backup.settings import get_settings

    report = rewrap_keys(database_url(), get_settings(), operator_recipients(args.encrypt_to), identities)
    if not args.json:
        print(
            f"{count(len(report.rewrapped), 'tenant key')} wrapped again to {', '.join(report.recipients)}; "
            f"{len(report.already)} already were"
        )
    out: dict[str, Any] = report.model_dump(mode="json")
    return out


def cmd_erase_tenant(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.operations.erasure import erase_tenant

    db_url, settings, storage = _plain()
    report = erase_tenant(
        db_url,
        settings,
        storage,
        args.tenant,
        confirm=args.confirm,
        dry_run=args.dry_run,
        requested_by=args.requested_by,
    )
    out: dict[str, Any] = report.model_dump(mode="json")
    if not args.json:
        key = f"its key {report.key}" if report.key else "no key of its own"
        if report.key_destroyed_at:
            key = f"no key (its key {report.key or ''} was destroyed on {report.key_destroyed_at[:16]} UTC)"
        if args.dry_run:
            rows = len(report.backups) - len(report.elsewhere)
            print(
                f"erasing tenant {report.tenant_id} would destroy {key}, delete {count(len(report.objects), 'object')}"
                f", {count(rows, 'ledger row')} and {count(report.schedules, 'schedule')}:"
            )
            for name in report.objects:
                print(f"  {name}")
            for backup_id in report.elsewhere:
                print(f"  backup {backup_id}: kept, its object is in another storage (run with that storage)")
        else:
            print(
                f"erased tenant {report.tenant_id}: destroyed {key}, deleted "
                f"{count(len(report.deleted_objects), 'object')} and {count(len(report.deleted_backups), 'ledger row')}"
            )
        if report.readable_copies:
            print(
                f"  {count(len(report.readable_copies), 'backup')} not encrypted to the tenant's key: a copy kept "
                f"elsewhere stays readable ({', '.join(report.readable_copies[:5])})"
            )
    return out


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    parameters = {
        "tenant_id": args.tenant,
        "dry_run": args.dry_run,
        "max_backups": args.max_backups,
        "max_age_days": args.max_age_days,
        "keep_daily": args.keep_daily,
        "keep_weekly": args.keep_weekly,
        "keep_monthly": args.keep_monthly,
    }
    if prefect_api():
        report = run_flow("flows.maintenance:prune_backups", **parameters)
    else:
        from flows.sequences.maintenance import prune_backups
        from tenant_backup.operations.retention import RetentionPolicy
        from tenant_backup.settings import get_settings

        limits = {k: v for k, v in parameters.items() if k not in ("tenant_id", "dry_run")}
        policy = RetentionPolicy.from_settings(get_settings(), **limits)
        report = prune_backups(local_runner(), policy, args.tenant, args.dry_run, None, None)
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
    if prefect_api():
        report = run_flow("flows.maintenance:reconcile_storage", clean=args.clean)
    else:
        from flows.sequences.maintenance import reconcile_storage

        report = reconcile_storage(local_runner(), args.clean, None, None)
    out: dict[str, Any] = report.model_dump(mode="json")
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
    require_prefect_api("sync-schedules (it writes the schedules of a Prefect deployment)")
    report = run_flow(
        "flows.maintenance:sync_schedules", deployment=args.deployment, timezone=args.timezone, profile=args.profile
    )
    out: dict[str, Any] = report.model_dump(mode="json")
    if not args.json:
        for c in report.changes:
            print(f"{c.action:<9} {c.slug}  {c.cron or ''}  next: {c.next_run or '-'}")
        for bad in report.invalid:
            print(f"skipped   row {bad.id} ({bad.nom}): {bad.error}")
    return out
