"""``tenant-backup``: the command line.

It runs the same sequences of steps as the Prefect flows: without ``PREFECT_API_URL`` in this
process, directly (no Prefect is imported, no server is started); with it, as flow runs tracked
by that server. With ``--json`` a command prints exactly one JSON object on stdout; without it, a
readable summary (and a progress bar on a terminal). Errors: one ``error:`` line on stderr and an
exit status: 2 refused before anything was written (bad input, refused, throttled, busy), 3
failed while working (rolled back or marked failed), 4 approval refused, 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from tenant_backup.cli import commands, operations, watch
from tenant_backup.cli.arguments import backup_id, database_url, json_object, positive, storage_url, user_id
from tenant_backup.errors import TenantBackupError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one ``error:`` line naming the help to read, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _quiet_prefect(verbose: bool) -> None:
    """Settings that must be in place before Prefect is imported (when it is)."""
    # Logs still reach the Prefect API (and UI); only the console copy is silenced.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")


def _say_waits(verbose: bool) -> None:
    """What a run waits for (a backup slot, a tenant's lock) goes to stderr as it starts waiting,
    one line starting with ``tenant-backup:``, so that a command never waits in silence; with
    ``-v`` every step's one-line summary too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tenant-backup: %(message)s"))
    logger = logging.getLogger("tenant_backup")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _set_locations(args: argparse.Namespace) -> None:
    """--db / --storage go to the environment that blocks/ reads, so secrets never become flow
    parameters (which the Prefect API stores and shows)."""
    if getattr(args, "db", None):
        os.environ["TENANT_BACKUP_DATABASE_URL"] = args.db
    if getattr(args, "storage", None):
        os.environ["TENANT_BACKUP_STORAGE_URL"] = args.storage
    if getattr(args, "storage_options", None):
        os.environ["TENANT_BACKUP_STORAGE_OPTIONS"] = args.storage_options
    if getattr(args, "identity", None):  # private keys: read from their files, never a parameter
        os.environ["TENANT_BACKUP_IDENTITY_FILE"] = os.pathsep.join(args.identity)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tenant-backup", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="say every step (and show Prefect's logs)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, storage: bool = False, reads: bool = False) -> None:
        p.add_argument("--db", type=database_url, help="PostgreSQL URL (default: TENANT_BACKUP_DATABASE_URL)")
        if storage:
            p.add_argument(
                "--storage",
                type=storage_url,
                help="storage URL: s3://bucket/prefix, file:///dir (default: TENANT_BACKUP_STORAGE_URL)",
            )
            p.add_argument(
                "--storage-options", type=json_object, help="fsspec options as JSON, e.g. for an S3 endpoint"
            )
        if reads:
            p.add_argument(
                "--identity",
                action="append",
                metavar="KEY_FILE",
                help="age identity file (age-keygen's key.txt) to read encrypted backups with (repeatable; "
                "default: TENANT_BACKUP_IDENTITY_FILE, TENANT_BACKUP_IDENTITIES, TENANT_BACKUP_IDENTITY_BLOCK)",
            )
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        # -v after the command too (tenant-backup restore ID -v), as it is typed
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("migrate", help="create or update the ledger tables")
    common(p)
    p.add_argument(
        "--app-policies",
        action="store_true",
        help="also create the views an app reads through PostgREST / supabase-js: its users' backups and logs, "
        "its admins' schedules (filtered by the JWT's user under the profile's admin rule)",
    )
    p.add_argument("--profile", help="the profile whose admin rule the views follow (default: pos)")
    p.add_argument("--app-schema", default="public", help="the API's schema for the views (default: public)")
    p.add_argument("--app-role", default="authenticated", help="the role API requests run as (default: authenticated)")
    p.set_defaults(func=operations.cmd_migrate)

    p = sub.add_parser("backup", help="back up one tenant, or every tenant (--all-tenants)")
    common(p, storage=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", help="tenant id")
    which.add_argument(
        "--all-tenants", action="store_true", help="every tenant of the profile (the flow backup-all-tenants)"
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--tenant-column", help="discover the tables holding this column (your own schema)")
    scope.add_argument("--profile", help="shipped profile (pos, crm) or a .toml / .yaml file (default: pos)")
    p.add_argument("--category", action="append", help="a category of the profile (repeatable; default: all)")
    p.add_argument(
        "--format",
        choices=["csv", "json", "sql"],
        default="csv",
        help="csv: ZIP of CSV files for spreadsheets (default); json: seed 000's document; sql: psql script",
    )
    p.add_argument(
        "--compression", choices=["deflate", "zstd", "none"], default="deflate", help="default deflate (fast)"
    )
    p.add_argument("--compression-level", type=int, help="deflate 0..3, zstd 1..19")
    p.add_argument(
        "--type",
        dest="kind",
        choices=["full", "incremental"],
        default="full",
        help="incremental: only what changed since the tenant's newest backup (csv); a full one when there is none "
        "to follow, its chain is older than TENANT_BACKUP_CHAIN_DAYS (weekly full) or the schema changed",
    )
    p.add_argument("--force", action="store_true", help="ignore the one-backup-per-5-minutes throttle")
    p.add_argument("--allow-empty", action="store_true", help="back up a tenant that has no rows yet (no tenant table)")
    p.add_argument("--requested-by", type=user_id, help="app user id to check against the profile's admin rule")
    p.add_argument("--name", help="name of the backup in the ledger")
    p.add_argument(
        "--encrypt-to",
        action="append",
        metavar="RECIPIENT",
        help="encrypt the artifact with age to this public key, age1… (repeatable: an operations key and an "
        "offline recovery key; default: TENANT_BACKUP_RECIPIENTS)",
    )
    p.add_argument(
        "--tenant-key",
        action="store_true",
        help="encrypt to the tenant's own key, kept wrapped to the --encrypt-to recipients, so that erase-tenant "
        "makes every copy unreadable (default: TENANT_BACKUP_TENANT_KEYS)",
    )
    p.set_defaults(func=commands.cmd_backup)

    p = sub.add_parser("restore", help="restore a backup (verified first, one transaction)")
    common(p, storage=True, reads=True)
    p.add_argument(
        "backup_id",
        nargs="?",
        type=backup_id,
        help="the backup to restore: its id or a unique prefix (tenant-backup list)",
    )
    p.add_argument("--file", help="restore an artifact that is not in this ledger: a local path or a storage URL")
    p.add_argument("--confirm", help="type RESTORE to confirm (not needed with --dry-run)")
    p.add_argument("--requested-by", type=user_id, help="app user id to check against the profile's admin rule")
    p.add_argument(
        "--mode",
        choices=["replace", "merge"],
        default="replace",
        help="replace: rows become exactly the backup's; merge: insert and update, delete nothing",
    )
    p.add_argument("--dry-run", action="store_true", help="verify and count what would change; write nothing")
    p.add_argument("--table", action="append", help="restore only this table (repeatable)")
    p.add_argument("--target-tenant", help="restore into another tenant")
    p.add_argument(
        "--cascade",
        action="store_true",
        help="let ON DELETE rules change rows of tables outside the restore (the plan lists them)",
    )
    p.add_argument(
        "--require-approval", action="store_true", help="pause for approval in the Prefect UI (needs PREFECT_API_URL)"
    )
    p.set_defaults(func=commands.cmd_restore)

    p = sub.add_parser("verify", help="check a backup without restoring it")
    common(p, storage=True, reads=True)
    p.add_argument("backup_id", type=backup_id, help="the backup to check: its id or a unique prefix")
    p.set_defaults(func=commands.cmd_verify)

    p = sub.add_parser(
        "verify-all", help="verify each tenant's newest backup (or --sample N of them, verified longest ago first)"
    )
    common(p, storage=True, reads=True)
    p.add_argument("--sample", type=positive, help="only N tenants, those verified longest ago (a rotation)")
    p.set_defaults(func=watch.cmd_verify_all)

    p = sub.add_parser(
        "status", help="every tenant: newest backup against its schedule, last verification, last failure"
    )
    common(p)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--profile", help="with a profile, the app's tenants never backed up count too")
    scope.add_argument("--tenant-column", help="instead of a profile: the column that holds the tenant id")
    p.set_defaults(func=watch.cmd_status)

    p = sub.add_parser("show", help="print a backup's tables, or one table's rows (no database writes)")
    common(p, storage=True, reads=True)
    p.add_argument("backup_id", type=backup_id, help="the backup to look into: its id or a unique prefix")
    p.add_argument("--table", help="the table to print (default: list the tables)")
    p.add_argument("--head", type=positive, help="only the first N rows")
    p.set_defaults(func=commands.cmd_show)

    p = sub.add_parser("serve", help="serve every deployment from this process (until stopped)")
    common(p, storage=True)
    p.add_argument("--timezone", default="UTC", help="time zone of the schedules (default UTC)")
    p.add_argument("--backup-cron", default="0 */12 * * *", help="schedule of backup-all-tenants")
    p.add_argument("--profile", default="pos", help="profile of the scheduled backups (default pos)")
    p.set_defaults(func=operations.cmd_serve)

    p = sub.add_parser("list", help="list backups, newest first")
    common(p)
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--status", choices=["pending", "in_progress", "completed", "failed"])
    p.add_argument("--backup-type", choices=["manual", "scheduled"])
    p.add_argument("--format", choices=["csv", "json", "sql"])
    p.add_argument("--since", type=datetime.fromisoformat, help="created at or after (ISO 8601)")
    p.add_argument("--until", type=datetime.fromisoformat, help="created before (ISO 8601)")
    p.add_argument("--limit", type=positive, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=operations.cmd_list)

    p = sub.add_parser("grants", help="the least privileges a role needs to back up (--restore: and restore)")
    common(p)
    p.add_argument("--role", required=True, help="the database role that will run backups (and restores)")
    p.add_argument("--restore", action="store_true", help="what a restore needs too")
    p.add_argument("--apply", action="store_true", help="run the statements (as a role that may grant them)")
    p.add_argument("--profile", help="shipped profile (pos, crm) or a .toml / .yaml file (default: pos)")
    p.add_argument("--tenant-column", help="instead of a profile: the column that holds the tenant id")
    p.add_argument("--category", action="append", help="only these categories (default: all)")
    p.set_defaults(func=operations.cmd_grants)

    p = sub.add_parser("url", help="a download URL for a backup (S3: presigned, valid --expires seconds)")
    common(p, storage=True)
    p.add_argument("backup_id", type=backup_id, help="its id or a unique prefix")
    p.add_argument("--expires", type=positive, default=3600, help="seconds (default 3600)")
    p.set_defaults(func=operations.cmd_url)

    p = sub.add_parser("delete", help="delete a backup: its object, then its ledger row (admins only)")
    common(p, storage=True)
    p.add_argument("backup_id", type=backup_id, help="its id or a unique prefix")
    p.add_argument("--confirm", help="type DELETE to confirm")
    p.add_argument("--requested-by", type=user_id, help="app user id to check against the profile's admin rule")
    p.set_defaults(func=operations.cmd_delete)

    p = sub.add_parser(
        "rewrap-keys",
        help="key rotation for per-tenant keys: wrap every tenant's key to the new operator recipients",
    )
    common(p, reads=True)
    p.add_argument(
        "--encrypt-to",
        action="append",
        metavar="RECIPIENT",
        help="the new operator recipients (repeatable; default: TENANT_BACKUP_RECIPIENTS)",
    )
    p.set_defaults(func=operations.cmd_rewrap_keys)

    p = sub.add_parser(
        "erase-tenant",
        help="erase a tenant's backups for good: destroy its own key (copies anywhere become unreadable), then "
        "delete its objects and ledger rows (admins only)",
    )
    common(p, storage=True)
    p.add_argument("tenant", help="the tenant id")
    p.add_argument("--confirm", help="type ERASE to confirm (not needed with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    p.add_argument("--requested-by", type=user_id, help="app user id to check against the profile's admin rule")
    p.set_defaults(func=operations.cmd_erase_tenant)

    p = sub.add_parser("prune", help="retention: delete what the rules do not keep")
    common(p, storage=True)
    p.add_argument("--tenant", help="only this tenant (default: all)")
    p.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    p.add_argument("--max-backups", type=positive, help="per tenant (default TENANT_BACKUP_MAX_BACKUPS, 50)")
    p.add_argument("--max-age-days", type=positive, help="age limit (default TENANT_BACKUP_MAX_AGE_DAYS, 7)")
    for unit in ("daily", "weekly", "monthly"):
        p.add_argument(
            f"--keep-{unit}", type=int, help=f"also keep the newest backup of each of the last N {unit} periods"
        )
    p.set_defaults(func=operations.cmd_prune)

    p = sub.add_parser("reconcile", help="compare storage with the ledger (orphan objects, missing objects)")
    common(p, storage=True)
    p.add_argument("--clean", action="store_true", help="delete orphan objects, mark rows without an object failed")
    p.set_defaults(func=operations.cmd_reconcile)

    p = sub.add_parser("sync-schedules", help="apply backup_schedules to the scheduled deployment's schedules")
    common(p)
    p.add_argument("--deployment", default="backup-tenant/app-schedules")
    p.add_argument("--timezone", help="time zone of the schedules (default TENANT_BACKUP_TIMEZONE)")
    p.add_argument("--profile", help="profile of the scheduled backups (default: the deployment's)")
    p.set_defaults(func=operations.cmd_sync_schedules)
    return parser


def _fail(args: argparse.Namespace, code: int, message: str, output: dict[str, Any] | None = None) -> int:
    """The error line on stderr (one line, always); with --json, stdout's one object too: the
    error, merged into what the command had to say (a run of many tenants' outcomes)."""
    message = message.replace("\r", " ").replace("\n", " ")
    if args.json:
        print(json.dumps({**(output or {}), "status": "error", "exit_code": code, "error": message}, default=str))
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_prefect(args.verbose)
    _say_waits(args.verbose)
    _set_locations(args)
    try:
        out = args.func(args)
    except TenantBackupError as exc:
        ids = {k: getattr(exc, k) for k in ("tenant_id", "backup_id", "table") if getattr(exc, k, None)}
        return _fail(args, exc.exit_code, str(exc), {**(getattr(exc, "output", None) or {}), **ids})
    except BrokenPipeError:  # the reader went away (`… | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("error: interrupted; a backup in progress is marked failed by the tenant's next run", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        psycopg = sys.modules.get("psycopg")  # loaded, since the error came from it
        if psycopg is not None and isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return _fail(  # a query that no up-front access check covered
                args,
                2,
                f"the database role may not do what this needs ({first}); connect as a role that may "
                "(on Supabase the postgres role; see the README, 'Which database role'), or GRANT it",
            )
        if args.verbose:
            traceback.print_exc()
        return _fail(
            args,
            1,
            f"unexpected {type(exc).__name__}: {first} (a bug in tenant-backup: please report it, with "
            "the output of tenant-backup -v …)",
        )
    if args.json:
        print(json.dumps(out, default=str))
    return 0
