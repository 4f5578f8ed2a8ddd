"""The commands that move rows: backup, restore, verify, show (operations.py has the others).

Each ``cmd_*`` takes the parsed arguments and returns the JSON object that ``--json`` prints;
without ``--json`` it prints a readable summary itself. Everything that can be checked before the
work starts is checked first, in this process and without Prefect: ids, the confirmation, the
profile and the tenant, the role's access, the throttle. Then the sequence runs (execute.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from tenant_backup.cli.execute import local_runner, prefect_api, require_prefect_api, run_flow
from tenant_backup.cli.output import count, progress_bar
from tenant_backup.errors import ConfigurationError, LedgerError, TenantsFailedError
from tenant_backup.results import SpaceNeed, human_size

__all__ = ["cmd_backup", "cmd_restore", "cmd_show", "cmd_verify", "resolve_id"]


def _checked(model: type[Any], **fields: Any) -> Any:
    """A request model built from the arguments; a field that does not fit is bad input."""
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ConfigurationError(f"{where}: {error['msg']}") from exc


def resolve_id(text: str) -> str:
    """A backup's full id from what was typed: the id, or a unique prefix of it."""
    from blocks import database_url
    from tenant_backup.db import connect
    from tenant_backup.ledger.lookup import resolve_backup_id
    from tenant_backup.settings import get_settings

    settings = get_settings()
    with connect(database_url(), lock_timeout=settings.lock_timeout) as conn:
        return resolve_backup_id(conn, settings.ledger_schema, text)


def cmd_backup(args: argparse.Namespace) -> dict[str, Any]:
    if args.all_tenants:
        return cmd_backup_all(args)
    from blocks import database_url
    from tenant_backup.backup import steps
    from tenant_backup.backup.steps import BackupRequest
    from tenant_backup.settings import get_settings

    parameters: dict[str, Any] = {
        "tenant_id": args.tenant,
        "categories": args.category,
        "format": args.format,
        "compression": args.compression,
        "compression_level": args.compression_level,
        "encrypt_to": args.encrypt_to,
        "tenant_key": args.tenant_key or None,
        "requested_by": args.requested_by,
        "profile": args.profile or "pos",
        "tenant_column": args.tenant_column,
        "force": args.force,
        "allow_empty": args.allow_empty,
        "name": args.name,
        "kind": args.kind,
    }
    request = _checked(BackupRequest, **parameters)
    plan = steps.plan_backup(database_url(), get_settings(), request)  # every refusal, before any work
    with progress_bar("backing up", not args.json):
        if prefect_api():
            result = run_flow("flows.backup:backup_tenant", **parameters)
        else:
            from flows.sequences.backup import backup_tenant

            result = backup_tenant(local_runner(), request, None, None, plan=plan)
    out: dict[str, Any] = result.model_dump(mode="json")
    if not args.json:
        print(
            f"backup {out['backup_id']} of tenant {out['tenant_id']} ({out['tenant_name'] or '-'}): "
            f"{count(out['record_count'], 'row')} in {count(len(out['tables']), 'table')}, "
            f"{human_size(out['file_size'])}, {out['seconds']:.2f} s\n"
            f"  artifact: {out['storage_path']}\n  checksum: {out['checksum']}"
            + (f"\n  incremental since backup {out['parent_id']}" if out["parent_id"] else "")
            + (f"\n  a full backup, starting a chain: {out['chain_note']}" if out["chain_note"] else "")
            + (f"\n  encrypted to: {', '.join(out['encrypted_to'])}" if out["encrypted_to"] else "")
        )
    return out


def cmd_backup_all(args: argparse.Namespace) -> dict[str, Any]:
    """``backup --all-tenants``: the flow backup-all-tenants (its sequence without a server)."""
    from blocks import database_url
    from tenant_backup.backup import steps
    from tenant_backup.backup.steps import BackupRequest
    from tenant_backup.settings import get_settings

    for flag, given in (
        ("--requested-by", args.requested_by),
        ("--name", args.name),
        ("--allow-empty", args.allow_empty),
    ):
        if given:
            raise ConfigurationError(f"{flag} is for one tenant (--tenant ID), not with --all-tenants")
    parameters: dict[str, Any] = {
        "categories": args.category,
        "profile": None if args.tenant_column else args.profile or "pos",
        "tenant_column": args.tenant_column,
        "backup_type": "manual",
        "force": args.force,
        "format": args.format,
        "compression": args.compression,
        "compression_level": args.compression_level,
        "encrypt_to": args.encrypt_to,
        "tenant_key": args.tenant_key or None,
        "kind": args.kind,
    }
    settings = get_settings()
    found = steps.list_tenants(database_url(), settings, parameters["profile"], args.tenant_column)
    if found.tenants:  # the profile, categories, codec and the role's access, checked once before any work
        first = _checked(BackupRequest, tenant_id=found.tenants[0].id, **{**parameters, "force": True})
        steps.plan_backup(database_url(), settings, first)
    with progress_bar("backing up", not args.json):
        if prefect_api():
            outcomes = run_flow("flows.backup:backup_all_tenants", failed_result=True, **parameters)
            if isinstance(outcomes, BaseException):  # failed before it had outcomes
                raise outcomes
        else:
            from flows.sequences.backup import backup_tenants

            outcomes = backup_tenants(local_runner(), found, parameters, None, None, settings.tenant_concurrency)
    out: dict[str, Any] = {
        "tenants": [o.model_dump(mode="json") for o in outcomes],
        **{status: sum(o.status == status for o in outcomes) for status in ("completed", "skipped", "failed")},
    }
    unlisted = [o for o in outcomes if o.unlisted]
    if not args.json:
        rows = sum(o.record_count or 0 for o in outcomes)
        print(
            f"{count(len(outcomes) - len(unlisted), 'tenant')}: {out['completed']:,} backed up ({count(rows, 'row')}), "
            f"{out['skipped']:,} skipped (backed up less than the throttle ago: --force), "
            f"{out['failed'] - len(unlisted):,} failed"
        )
        for o in outcomes:
            if o.status != "completed" and not o.unlisted:
                print(
                    f"  {o.status:<8} {o.tenant_id}" + (f" ({o.tenant_name})" if o.tenant_name else "") + f": {o.error}"
                )
        if unlisted:
            print(f"{count(len(unlisted), 'tenant id')} that rows hold but the tenant table lacks (failed):")
            for o in unlisted:
                print(f"  {o.tenant_id}: {o.error}")
    if out["failed"]:
        failed = out["failed"] - len(unlisted)
        said = [f"{failed} of {len(outcomes) - len(unlisted)} tenant backups failed"] if failed else []
        if unlisted:
            said.append(
                f"rows of {count(len(unlisted), 'tenant id')} that the tenant table lacks are in no backup "
                f"({', '.join(o.tenant_id for o in unlisted[:3])}{', …' if len(unlisted) > 3 else ''})"
            )
        raise TenantsFailedError(
            "; ".join(said) + " (each one's reason is listed); the other backups are complete", output=out
        )
    return out


def cmd_restore(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.restore import CONFIRMATION

    if args.confirm is not None and args.confirm != CONFIRMATION:
        raise ConfigurationError(f"--confirm takes the word {CONFIRMATION} (in capitals), not {args.confirm!r}")
    if args.require_approval:
        require_prefect_api("--require-approval (the approval form lives in the Prefect UI)")
    if bool(args.backup_id) == bool(args.file):
        raise ConfigurationError("give the backup to restore: its id (tenant-backup list), or --file PATH_OR_URL")
    from blocks import database_url
    from flows.sequences.restore import ApprovalRequest
    from tenant_backup.restore import steps
    from tenant_backup.restore.steps import RestoreRequest, RunLog
    from tenant_backup.settings import get_settings

    parameters: dict[str, Any] = {
        "backup_id": resolve_id(args.backup_id) if args.backup_id else None,
        "file": args.file,
        "confirm": args.confirm,
        "requested_by": args.requested_by,
        "mode": args.mode,
        "dry_run": args.dry_run,
        "tables": args.table,
        "target_tenant": args.target_tenant,
        "cascade": args.cascade,
    }
    req = _checked(RestoreRequest, **parameters)
    if req.file:  # its other checks need its manifest: they run once it is read
        steps.require_confirmation(req, req.file, req.target_tenant or "of the file")
    else:
        steps.check_request(database_url(), get_settings(), req, RunLog())  # refusals are logged there
    with progress_bar("restoring", not args.json):
        if prefect_api():
            result = run_flow("flows.restore:restore_backup", **parameters, require_approval=args.require_approval)
        else:
            from flows.sequences.restore import restore_backup

            result = restore_backup(local_runner(), req, ApprovalRequest(), None, None)
    out: dict[str, Any] = result.model_dump(mode="json")
    if not args.json:
        _print_counts(out, "dry run: would change" if args.dry_run else "restored", cascade=args.cascade)
    return out


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    backup_id = resolve_id(args.backup_id)
    with progress_bar("verifying", not args.json):
        if prefect_api():
            result = run_flow("flows.restore:verify_backup", backup_id=backup_id)
        else:
            from flows.sequences.restore import verify_backup

            result = verify_backup(local_runner(), backup_id, None, None)
    out: dict[str, Any] = result.model_dump(mode="json")
    if not args.json:
        _print_counts(out, "verified (checksums, manifest, and a rolled-back test restore); a restore would change")
    return out


def _print_counts(out: dict[str, Any], what: str, *, cascade: bool = False) -> None:
    source = f" (from tenant {out['source_tenant']})" if out["source_tenant"] != out["tenant_id"] else ""
    print(f"backup {out['backup_id']} -> tenant {out['tenant_id']}{source}, mode {out['mode']}, {what}:")
    if out.get("chain"):
        print(
            f"  an incremental: its rows rebuilt from the {len(out['chain']) + 1} backups of its chain, "
            f"base {out['chain'][0]} first, each verified"
        )
    print(f"  {'table':<24} {'rows':>12}  {'+ insert':>10} {'~ update':>10} {'- delete':>10}  matched by")
    for table, c in out["tables"].items():
        print(
            f"  {table:<24} {c['rows']:>12,}  {c['inserted']:>10,} {c['updated']:>10,} {c['deleted']:>10,}  "
            f"{c.get('matched_by', 'key')}"
        )
    staged = [c for c in out["tables"].values() if c.get("staged") is not None]
    if staged and sum(c["staged"] for c in staged) < sum(c["rows"] for c in staged):
        print(
            f"  compared by lines first: {sum(c['staged'] for c in staged):,} of the backup's "
            f"{sum(c['rows'] for c in staged):,} rows differed from the tenant's and were staged"
        )
    for effect in out["outside"]:
        print(
            f"  outside the restore: {count(effect['rows'], 'row')} of {effect['table']} would be reached "
            f"({effect['action']}: {effect.get('via') or effect['foreign_key']})"
            + ("; --cascade: their ON DELETE rules act" if cascade else "; refused unless --cascade")
        )
    for m in out.get("missing_references", []):
        print(
            f"  refused: {count(m['rows'], 'row')} of {m['table']} reference rows of {m['references']} that this "
            f"database lacks ({m['foreign_key']}, e.g. {', '.join(m['examples'])})"
        )
    for table, cols in out["dropped_columns"].items():
        print(f"  columns dropped since the backup, not restored: {table}: {', '.join(cols)}")
    for table, cols in out["added_columns"].items():
        print(f"  columns added since the backup, given their default: {table}: {', '.join(cols)}")
    print(
        "  (+ rows the backup has and the table lacks, ~ rows whose values differ, - rows the backup lacks; "
        "a table without a key is matched by whole rows)"
    )
    if out.get("space"):
        print(f"  room on the database server: {SpaceNeed.model_validate(out['space']).describe()}")
    print(f"  app triggers: {out['triggers']}; {out['seconds']:.2f} s")


def cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    from blocks import database_url, identities
    from tenant_backup import ledger
    from tenant_backup.artifact.dataframes import open_backup
    from tenant_backup.db import connect
    from tenant_backup.ledger.lookup import require_ledger, resolve_backup_id
    from tenant_backup.restore.identities import reading_identities, tenant_key_of
    from tenant_backup.settings import get_settings

    settings = get_settings()
    with connect(database_url(), lock_timeout=settings.lock_timeout) as conn:
        require_ledger(conn, settings.ledger_schema)
        row = ledger.get_backup(
            conn, settings.ledger_schema, resolve_backup_id(conn, settings.ledger_schema, args.backup_id)
        )
        key = tenant_key_of(conn, settings.ledger_schema, row.tenant_id, row.encrypted_to, row.id)
    if row.status != "completed" or not row.storage_path:
        raise LedgerError(f"backup {row.id} is {row.status}: it has no artifact to show", backup_id=row.id)
    backup = open_backup(
        row.storage_path,
        storage_options=settings.storage_options,
        checksum=row.checksum,
        encrypted_to=row.encrypted_to,
        identities=reading_identities(identities, key),
        backup_id=row.id,
    )
    if not args.table:
        tables: dict[str, dict[str, Any]] = {
            name: {"rows": t.rows, "content": t.content, "columns": [c.name for c in t.columns]}
            for name, t in backup.manifest.tables.items()
        }
        parent = backup.manifest.parent_id
        if not args.json:
            print(
                f"backup {row.id} of tenant {row.tenant_id}, {backup.manifest.artifact_format}, {backup.manifest.date}"
                + (f", incremental since backup {parent}: its tables hold the rows written since" if parent else "")
                + ":"
            )
            for name, t in tables.items():
                whole = " (whole)" if parent and t["content"] == "rows" else ""
                print(f"  {name:<24} {count(t['rows'], 'row'):>14}{whole}  {', '.join(t['columns'])}")
        return {"backup_id": row.id, "parent_id": parent, "tables": tables}
    if args.table not in backup.manifest.tables:
        raise ConfigurationError(
            f"backup {row.id} holds no table {args.table!r}; it holds: {', '.join(sorted(backup.manifest.tables))}"
        )
    frame = backup.table(args.table, head=args.head)
    if not args.json:
        print(frame_text(frame, args.head or 60))
    return {
        "backup_id": row.id,
        "table": args.table,
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
        "rows": [{c: _jsonable(v) for c, v in r.items()} for r in frame.astype(object).to_dict("records")],
    }


def frame_text(frame: Any, limit: int) -> str:
    """A table's rows for a terminal: one line per row when they fit its width, else one block per
    row, a column per line (as psql's expanded display), so that nothing wraps into a mess."""
    import shutil

    width = shutil.get_terminal_size((120, 24)).columns
    shown = frame.head(limit).astype(object).map(_shown)  # json / jsonb as JSON, not Python's repr
    text: str = shown.to_string(index=False, max_colwidth=40)
    if max((len(line) for line in text.splitlines()), default=0) <= width:
        return text
    label = max((len(str(c)) for c in shown.columns), default=0)
    blocks = []
    for n, (_, row) in enumerate(shown.astype(object).iterrows(), start=1):
        cells = [f"{c!s:<{label}} | {_cell(v)[: max(width - label - 3, 10)]}" for c, v in row.items()]
        blocks.append("\n".join([f"-[ row {n} ]" + "-" * max(width - 12, 0), *cells]))
    return "\n".join(blocks)


def _json_text(value: Any) -> Any:
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _shown(value: Any) -> Any:
    """A cell for the one-line-per-row display: NULL as <NA>, json as JSON."""
    return "<NA>" if _jsonable(value) is None else _json_text(value)


def _cell(value: Any) -> str:
    """A cell as one line of text (NULL as <NA>, newlines shown as \\n)."""
    text = "<NA>" if _jsonable(value) is None else str(_json_text(_jsonable(value)))
    return text.replace("\n", "\\n").replace("\r", "\\r")


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
