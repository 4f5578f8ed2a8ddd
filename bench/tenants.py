"""Many small tenants (issue 12): ``tenant-backup backup --all-tenants`` over N small POS tenants,
against a Prefect server on SQLite and on PostgreSQL, beside the same command without a server
(the plain steps) and ``pg_dump -Fc`` of the whole database. Whole processes, one run each.

Per tenant, the orchestration is the time above the plain steps: (with a server - without) / N.
Goals: <= 0.3 s of orchestration per tenant; no tenant failed; the flow process's peak RSS flat
as N grows. ``python -m bench.tenants`` runs this part alone; BENCH_TENANTS="50,200,1000" sets N.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import AbstractContextManager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.common import (
    Goal,
    Timing,
    demo_database,
    peak_rss_of,
    prefect_server,
    report_goals,
    server_url,
    tree_peak_rss_mb,
)

COUNTS = [int(n) for n in os.environ.get("BENCH_TENANTS", "50,200,1000").split(",") if n.strip()]
SMALL_ROWS = 70  # about 344 rows per tenant, as in the issue


def _prefect_database() -> str:
    """A fresh database for the Prefect server on PostgreSQL (the app's server, its own database)."""
    base = server_url()
    name = "tenant_backup_bench_prefect"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(base)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", path=f"/{name}"))


def _all_tenants(url: str, store: str, env: dict[str, str]) -> tuple[float, float, dict[str, object]]:
    cmd = [sys.executable, "-m", "tenant_backup.cli", "backup", "--all-tenants", "--db", url, "--storage", store]
    seconds, rss, out = peak_rss_of([*cmd, "--force", "--json"], env)
    return seconds, rss, json.loads(out)


def tenant_rounds() -> tuple[list[str], list[Goal]]:
    """Lines of the report, and the goals."""
    lines: list[str] = []
    goals: list[Goal] = []
    plain_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    work = tempfile.mkdtemp(prefix="tb-bench-tenants-")
    servers: list[tuple[str, AbstractContextManager[dict[str, str]]]] = [
        ("Prefect server, SQLite", prefect_server()),
        ("Prefect server, PostgreSQL", prefect_server(_prefect_database())),
    ]
    try:
        urls = {n: demo_database(f"tenant_backup_bench_{n}_tenants", n, SMALL_ROWS) for n in COUNTS}
        plain: dict[int, Timing] = {}
        for n, url in urls.items():
            plain[n] = Timing(f"{n} tenants, no server (the plain steps)")
            seconds, rss, out = _all_tenants(url, f"file://{work}/plain", plain_env)
            plain[n].add(seconds, rss)
            dump = Timing(f"{n} tenants, pg_dump -Fc of the whole database")
            dump.add(*peak_rss_of(["pg_dump", "-Fc", "-f", f"{work}/all.dump", "-d", url])[:2])
            lines.append(f"{plain[n].name:<58}{seconds:>8.2f} s  {rss:>5.0f} MB  failed {out['failed']}")
            lines.append(f"{dump.name:<58}{dump.median:>8.2f} s")
        for title, server in servers:
            with server as env:
                for n, url in urls.items():
                    seconds, rss, out = _all_tenants(url, f"file://{work}/{n}", env)
                    per_tenant = (seconds - plain[n].median) / n
                    server_rss = tree_peak_rss_mb(int(env["BENCH_SERVER_PID"]))
                    goals.append(Goal(f"orchestration per tenant, s ({n} tenants, {title})", per_tenant, 0.3, "s"))
                    goals.append(Goal(f"tenants failed ({n} tenants, {title})", float(str(out["failed"])), 0.0))
                    lines.append(
                        f"{n} tenants, {title:<40}{seconds:>8.2f} s  {rss:>5.0f} MB  failed {out['failed']}  "
                        f"orchestration {per_tenant:.3f} s/tenant  server peak {server_rss:.0f} MB"
                    )
                    print(lines[-1], flush=True)
                    shutil.rmtree(f"{work}/{n}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines, goals


def main() -> int:
    lines, goals = tenant_rounds()
    print("\n" + "\n".join(lines))
    return 0 if report_goals(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
