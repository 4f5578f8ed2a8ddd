"""``make bench-big``: one tenant of 30 M rows (issue 12, goal 4), without a Prefect server.

The database (``tenant_backup_bench_30m``, BENCH_BIG_ROWS rows) is loaded once (~20 min on this
machine) and reused. One run each, as whole processes: the backup; 1 % of the rows changed; the
restore's dry run (its plan says the room it needs); the restore. Goals: peak RSS <= 250 MB for
the backup and the restore, and the plan reporting staging, temporary files and WAL.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("BENCH_DB", "tenant_backup_bench_30m")
os.environ["BENCH_ROWS"] = os.environ.get("BENCH_BIG_ROWS", "30000000")

from bench.common import Goal, Timing, bench_database, peak_rss_of, report, report_goals
from bench.restore import CHANGES, run_sql

GOAL_RSS_MB = 250.0


def main() -> int:
    url, tenant = bench_database()
    work = tempfile.mkdtemp(prefix="tb-bench-big-")
    store = f"file://{work}/store"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cli = [sys.executable, "-m", "tenant_backup.cli"]
    where = ["--db", url, "--storage", store]
    backup, dry, restore = (Timing(n) for n in ("backup", "restore --dry-run, 1 % changed", "restore, 1 % changed"))
    try:
        seconds, rss, out = peak_rss_of([*cli, "backup", "--tenant", tenant, "--force", "--json", *where], env)
        result = json.loads(out)
        backup.add(seconds, rss)
        backup.note = f"{result['record_count']:,} rows, {result['file_size'] / 1e9:.2f} GB"
        run_sql(url, [f"UPDATE {t} SET {c} = 'changed' WHERE abs(hashtext(id::text)) % 100 = 0" for t, c in CHANGES])
        seconds, rss, out = peak_rss_of([*cli, "restore", result["backup_id"], "--dry-run", "--json", *where], env)
        plan = json.loads(out)
        dry.add(seconds, rss)
        space = plan["space"] or {}
        dry.note = (
            f"staging {space.get('staging_bytes', 0) / 1e9:.2f} GB, temporary files "
            f"{space.get('temp_file_bytes', 0) / 1e9:.2f} GB, WAL {(space.get('wal_bytes') or 0) / 1e9:.2f} GB"
        )
        seconds, rss, out = peak_rss_of(
            [*cli, "restore", result["backup_id"], "--confirm", "RESTORE", "--json", *where], env
        )
        restore.add(seconds, rss)
        restore.note = f"{sum(t['updated'] for t in json.loads(out)['tables'].values()):,} rows updated"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report([backup, dry, restore], backup)
    goals = [
        Goal("30 M rows: backup peak RSS, MB", backup.peak, GOAL_RSS_MB),
        Goal("30 M rows: restore peak RSS, MB", max(dry.peak, restore.peak), GOAL_RSS_MB),
        Goal("30 M rows: plans without a room report (staging, temp files, WAL)", 0 if space else 1, 0.5),
    ]
    return 0 if report_goals(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
