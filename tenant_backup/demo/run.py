"""``make demo``: an embedded PostgreSQL, the POS schema with 3 tenants, every tenant backed up.

Everything lives under ``.demo/`` in the current folder: the database files (``.demo/pg``) and
the artifacts (``.demo/backups``, a ``file://`` storage). The backups run the same sequence as
the Prefect flow, in this process, without a Prefect server (nothing to start, nothing to time
out). The database keeps running after the demo so that you can look around; ``make demo-stop``
(``python -m tenant_backup.demo.run --stop``) stops it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEMO_DB = "pos_demo"
TENANTS = 3


def cli_command() -> str:
    """How to run ``tenant-backup`` from this checkout, as a person would type it."""
    here = Path(sys.executable).parent / "tenant-backup"
    if shutil.which("uv") and Path("uv.lock").is_file():
        return "uv run tenant-backup"
    return shlex.quote(str(here)) if here.exists() else f"{shlex.quote(sys.executable)} -m tenant_backup.cli"


def _start(folder: Path) -> Any:
    import pgserver

    folder.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(folder, cleanup_mode=None)  # keeps running after this process


def stop(folder: Path, wait: float = 30) -> str:
    """Stop the demo database as ``pg_ctl stop -m fast`` does (SIGINT to the postmaster), then wait
    for it to go; says what it did. (pgserver only stops a server from the process that started it,
    and pg_ctl refuses to run as root.)"""
    pid_file = folder / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return f"the demo database in {folder} is not running"
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return f"the demo database in {folder} was not running (removed its stale postmaster.pid)"
    deadline = time.monotonic() + wait
    while (pid_file.exists() or _alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_file.exists() or _alive(pid):
        return f"the demo database in {folder} did not stop within {wait:.0f} s: see {folder / 'log'}"
    return f"stopped the demo database in {folder}"


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie that only waits for its parent does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", default=".demo", help="where the database and artifacts live")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per tenant")
    parser.add_argument("--stop", action="store_true", help="stop the demo database and exit")
    args = parser.parse_args(argv)
    folder = Path(args.folder).resolve()
    if args.stop:
        print(stop(folder / "pg"))
        return 0
    url, storage = prepare(folder, args.rows)
    backups = back_up_every_tenant(url, storage)
    print_next_steps(url, storage, backups)
    return 0


def prepare(folder: Path, rows: int) -> tuple[str, str]:
    """Start the demo database (created and loaded once) and point tenant-backup at it."""
    import psycopg
    from psycopg import sql

    from tenant_backup.demo.generate import load_demo

    server = _start(folder / "pg")
    base = server.get_uri()
    url = urlunsplit(urlsplit(base)._replace(path=f"/{DEMO_DB}"))
    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DB,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
    with psycopg.connect(url, autocommit=True) as conn:
        loaded = conn.execute("SELECT to_regclass('public.etablissements') IS NOT NULL").fetchone()
        if loaded and loaded[0]:
            print("the POS schema is already loaded")
        else:
            print(f"loading the POS schema of seed 000: {TENANTS} tenants of ~{rows:,} rows ...", flush=True)
            load_demo(conn, "pos", TENANTS, rows)
    storage = f"file://{folder / 'backups'}"
    os.environ["TENANT_BACKUP_DATABASE_URL"] = url
    os.environ["TENANT_BACKUP_STORAGE_URL"] = storage
    return url, storage


def back_up_every_tenant(url: str, storage: str) -> list[Any]:
    """Back up each tenant with the backup flow's own sequence, in this process."""
    from flows.runner import LocalRunner
    from flows.sequences.backup import backup_tenant
    from tenant_backup.backup.steps import BackupRequest, list_tenants
    from tenant_backup.settings import get_settings

    settings = get_settings()
    runner = LocalRunner(max_workers=settings.max_workers)
    results = []
    print("backing up every tenant ...", flush=True)
    for tenant in list_tenants(url, settings, "pos", None).tenants:
        result = backup_tenant(runner, BackupRequest(tenant_id=tenant.id, profile="pos", force=True), None, None)
        print(
            f"  {result.tenant_name}: {result.record_count:,} rows in {len(result.tables)} tables, "
            f"{result.file_size:,} bytes, {result.seconds:.1f} s\n    {result.storage_path}"
        )
        results.append(result)
    return results


def print_next_steps(url: str, storage: str, backups: list[Any]) -> None:
    cmd = cli_command()
    first = backups[0]
    where = f"--db {shlex.quote(url)} --storage {shlex.quote(storage)}"
    short = first.backup_id[:8]
    print(
        f"""
database: {url}
storage:  {storage}
(or export TENANT_BACKUP_DATABASE_URL={shlex.quote(url)} TENANT_BACKUP_STORAGE_URL={shlex.quote(storage)}
 and leave --db / --storage out)

list the backups:      {cmd} list --db {shlex.quote(url)}
back up one tenant:    {cmd} backup {where} --tenant {first.tenant_id} --force
look into an artifact: unzip -l {shlex.quote(first.storage_path.removeprefix("file://"))}
                       {cmd} show {short} {where} --table ventes --head 5
other formats:         the backup command with --format json or --format sql (psql --single-transaction -f)

check a backup:        {cmd} verify {short} {where}
restore one tenant:    {cmd} restore {short} {where} --dry-run
                       {cmd} restore {short} {where} --confirm RESTORE
  (verified first, then one transaction in foreign-key order: the tenant's rows become exactly the backup's)

the Prefect UI:        make ui   (a Prefect server with its UI on http://127.0.0.1:4200, the deployments served)
stop the database:     make demo-stop"""
    )


if __name__ == "__main__":
    sys.exit(main())
