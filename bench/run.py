"""``make bench``: our backup of one 3 M-row tenant against pg_dump, side by side.

Whole processes, median of BENCH_RUNS (3) runs, interleaved so that they share the machine's
state: our CLI with PREFECT_API_URL pointing at a running Prefect server,
``pg_dump --data-only -Fc`` of the same tables, and ``pg_dump --data-only -Fd -j2 -Z0`` (the
COPY floor); then our CLI once more with the ephemeral API. Exits non-zero when a goal is missed:
backup <= 0.5x pg_dump -Fc, peak RSS <= 250 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import RUNS, Timing, bench_database, peak_rss_of, prefect_server, report
from tenant_backup.profiles import load_profile

GOAL_RATIO = 0.5
GOAL_RSS_MB = 250.0


def main() -> int:
    url, tenant = bench_database()
    tables = load_profile("pos").tables_for(None)
    work = tempfile.mkdtemp(prefix="tb-bench-")
    cli = [
        sys.executable,
        "-m",
        "tenant_backup.cli",
        "backup",
        "--db",
        url,
        "--storage",
        f"file://{work}/store",
        "--tenant",
        tenant,
        "--profile",
        "pos",
        "--force",
        "--json",
    ]
    table_args = [arg for t in tables for arg in ("-t", f"public.{t}")]
    ours = Timing("tenant-backup (CLI, running Prefect server)")
    fc = Timing("pg_dump --data-only -Fc")
    floor = Timing("pg_dump --data-only -Fd -j2 -Z0 (COPY floor)")
    ephemeral = Timing("tenant-backup (CLI, ephemeral Prefect API)")
    size = 0
    rows = 0
    try:
        with prefect_server() as env:
            print(f"Prefect server at {env['PREFECT_API_URL']}; {RUNS} runs each ...", flush=True)
            for i in range(RUNS):
                seconds, rss, out = peak_rss_of(cli, env)
                result = json.loads(out)
                size, rows = result["file_size"], result["record_count"]
                ours.seconds.append(seconds)
                ours.peak_rss_mb.append(rss)
                shutil.rmtree(f"{work}/store", ignore_errors=True)

                seconds, rss, _ = peak_rss_of(
                    ["pg_dump", "--data-only", "-Fc", *table_args, "-f", f"{work}/d.dump", "-d", url]
                )
                fc.seconds.append(seconds)
                fc.peak_rss_mb.append(rss)
                dump = Path(work) / "d.dump"
                fc.note = f"{dump.stat().st_size / 1e6:.0f} MB"
                dump.unlink()

                seconds, rss, _ = peak_rss_of(
                    ["pg_dump", "--data-only", "-Fd", "-j2", "-Z0", *table_args, "-f", f"{work}/dir", "-d", url]
                )
                floor.seconds.append(seconds)
                floor.peak_rss_mb.append(rss)
                shutil.rmtree(f"{work}/dir", ignore_errors=True)
                print(
                    f"  run {i + 1}: ours {ours.seconds[-1]:.2f} s, -Fc {fc.seconds[-1]:.2f} s, "
                    f"-Fd -j2 {floor.seconds[-1]:.2f} s",
                    flush=True,
                )
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = f"{work}/prefect-home"
        seconds, rss, _ = peak_rss_of(cli, env)
        ephemeral.seconds.append(seconds)
        ephemeral.peak_rss_mb.append(rss)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours.note = f"{size / 1e6:.0f} MB, {rows:,} rows"
    report([ours, fc, floor], fc)
    report([ephemeral], fc)
    ratio = ours.median / fc.median
    print(
        f"\nbackup / pg_dump -Fc = {ratio:.2f} (goal <= {GOAL_RATIO}); backup / COPY floor = "
        f"{ours.median / floor.median:.2f}; peak RSS {ours.peak:.0f} MB (goal <= {GOAL_RSS_MB:.0f})"
    )
    ok = ratio <= GOAL_RATIO and ours.peak <= GOAL_RSS_MB
    print("goals met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
