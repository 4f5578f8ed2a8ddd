"""``make demo``: an embedded PostgreSQL, the POS schema with 3 tenants, every tenant backed up.

Everything lives under ``.demo/`` in the current folder: the database files (``.demo/pg``) and
the artifacts (``.demo/backups``, a ``file://`` storage). The database keeps running after the
demo so that you can look around; ``python -m tenant_backup.demo.run --stop`` stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEMO_DB = "pos_demo"


def _server(folder: Path) -> object:
    import pgserver

    folder.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(folder, cleanup_mode=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", default=".demo", help="where the database and artifacts live")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per tenant")
    parser.add_argument("--stop", action="store_true", help="stop the demo database and exit")
    args = parser.parse_args(argv)
    folder = Path(args.folder).resolve()
    server = _server(folder / "pg")
    if args.stop:
        server.cleanup()  # type: ignore[attr-defined]
        print(f"stopped the demo database in {folder / 'pg'}")
        return 0

    import psycopg
    from psycopg import sql

    from tenant_backup.demo.generate import load_demo

    base = server.get_uri()  # type: ignore[attr-defined]
    parts = urlsplit(base)
    url = urlunsplit(parts._replace(path=f"/{DEMO_DB}"))
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DB,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
    with psycopg.connect(url, autocommit=True) as conn:
        loaded = conn.execute("SELECT to_regclass('public.etablissements') IS NOT NULL").fetchone()
        if loaded and loaded[0]:
            print("POS schema already loaded")
        else:
            print(f"loading the POS schema of seed 000: 3 tenants of ~{args.rows:,} rows ...")
            load_demo(conn, "pos", 3, args.rows)
        tenants = conn.execute("SELECT id::text, nom FROM etablissements ORDER BY nom").fetchall()

    storage = f"file://{folder / 'backups'}"
    os.environ["TENANT_BACKUP_DATABASE_URL"] = url
    os.environ["TENANT_BACKUP_STORAGE_URL"] = storage
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # the ephemeral server's shutdown noise
    print("backing up every tenant (Prefect flow backup-all-tenants, ephemeral API: ~10 s to start) ...")

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.backup import backup_all_tenants
    from tenant_backup.settings import get_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        outcomes = backup_all_tenants(profile="pos", backup_type="manual", force=True)

    from tenant_backup import ledger
    from tenant_backup.db import connect

    with connect(url) as conn:
        rows = {r.id: r for r in ledger.list_backups(conn, get_settings().ledger_schema, limit=len(outcomes))}
    print("\nartifacts:")
    names: dict[str, str] = {str(tid): str(name) for tid, name in tenants}
    for outcome in outcomes:
        row = rows[str(outcome.backup_id)]
        name = names.get(outcome.tenant_id, outcome.tenant_id)
        print(f"  {name}: {row.record_count:,} rows, {row.file_size:,} bytes")
        print(f"    {row.storage_path}")
    first = rows[str(outcomes[0].backup_id)]
    print(
        f"""
database: {url}
storage:  {storage}

list the backups:     tenant-backup list --db '{url}'
back up one tenant:   tenant-backup backup --db '{url}' --storage {storage} --tenant {outcomes[0].tenant_id} --force
look into an artifact: unzip -l {(first.storage_path or "").removeprefix("file://")}
                       tenant-backup show {first.id} --db '{url}' --storage {storage} --table ventes --head 5
other formats:         the backup command with --format json or --format sql (psql --single-transaction -f)

check a backup:        tenant-backup verify {first.id} --db '{url}' --storage {storage}
restore one tenant:    tenant-backup restore {first.id} --db '{url}' --storage {storage} --dry-run
                       tenant-backup restore {first.id} --db '{url}' --storage {storage} --confirm RESTORE
  (verified first, then one transaction in foreign-key order: the tenant's rows become exactly the backup's)

stop the demo database: python -m tenant_backup.demo.run --stop"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
