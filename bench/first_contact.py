"""First contact in ``make bench``: the CLI without a Prefect server, whole processes, on a tenant of
~10 k rows (a database of its own). Goals (issue 11): a refusal of bad input in <= 2 s,
a backup or a restore of a 10 k-row tenant in <= 5 s wall.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import RUNS, Timing, demo_database, peak_rss_of
from tenant_backup.demo.generate import tenant_uuid

GOAL_REFUSAL_S = 2.0
GOAL_SMALL_S = 5.0


def _refused(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of a command that must be refused (exit status 2, one ``error:`` line)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 2 or not proc.stderr.startswith("error:"):
        raise RuntimeError(f"expected a refusal (exit 2), got {proc.returncode}: {proc.stderr[-500:]}")
    return seconds


def first_contact_rounds(store: str) -> list[Timing]:
    """Median of RUNS of each: two refusals, a backup and a restore of a 10 k-row tenant."""
    url = demo_database("tenant_backup_bench_10k", 1, 10_000)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cli = [sys.executable, "-m", "tenant_backup.cli"]
    where = ["--db", url, "--storage", store]
    small = tenant_uuid("pos", 0)
    bad_id = Timing("refusal: restore not-a-uuid")
    bad_category = Timing("refusal: backup --category nope (checked in the db)")
    backup = Timing("backup of a 10 k-row tenant (CLI, no server)")
    restore = Timing("restore of it, replace (CLI, no server)")
    for _ in range(RUNS):
        bad_id.add(_refused([*cli, "restore", "not-a-uuid", *where, "--confirm", "RESTORE"], env), 0.0)
        bad_category.add(_refused([*cli, "backup", *where, "--tenant", small, "--category", "nope"], env), 0.0)
        seconds, rss, out = peak_rss_of([*cli, "backup", *where, "--tenant", small, "--force", "--json"], env)
        backup.add(seconds, rss)
        result = json.loads(out)
        backup.note = f"{result['record_count']:,} rows"
        seconds, rss, _ = peak_rss_of(
            [*cli, "restore", result["backup_id"], *where, "--confirm", "RESTORE", "--json"], env
        )
        restore.add(seconds, rss)
    return [bad_id, bad_category, backup, restore]
