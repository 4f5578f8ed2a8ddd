"""Backup time and artifact size per format and codec on the 3 M-row tenant.

Run inside ``make bench`` (after the CSV runs, against the same Prefect server), or alone with
``python -m bench.formats``. Each variant runs BENCH_RUNS times; the JSON writer's peak RSS is a
goal (<= 250 MB), like the CSV one's.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile

from bench.common import RUNS, Timing, bench_database, peak_rss_of, prefect_server, report

VARIANTS = [("json", "deflate"), ("sql", "deflate"), ("json", "zstd"), ("sql", "zstd"), ("csv", "none")]


def format_rounds(url: str, tenant: str, env: dict[str, str], work: str) -> list[Timing]:
    rows = []
    for fmt, codec in VARIANTS:
        timing = Timing(f"tenant-backup --format {fmt} --compression {codec}")
        for _ in range(RUNS):
            shutil.rmtree(f"{work}/formats", ignore_errors=True)
            cli = [sys.executable, "-m", "tenant_backup.cli", "backup", "--db", url]
            cli += ["--storage", f"file://{work}/formats", "--tenant", tenant, "--profile", "pos", "--force"]
            cli += ["--format", fmt, "--compression", codec, "--json"]
            seconds, rss, out = peak_rss_of(cli, env)
            timing.add(seconds, rss)
            result = json.loads(out)
            timing.note = f"{int(result['file_size']) / 1e6:.0f} MB"
        print(f"  {timing.name}: {' '.join(f'{s:.2f}' for s in timing.seconds)} s, {timing.note}", flush=True)
        rows.append(timing)
    shutil.rmtree(f"{work}/formats", ignore_errors=True)
    return rows


def main() -> int:
    url, tenant = bench_database()
    work = tempfile.mkdtemp(prefix="tb-bench-formats-")
    try:
        with prefect_server() as env:
            rows = format_rounds(url, tenant, env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, rows[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
