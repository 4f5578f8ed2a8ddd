"""``make bench``: our backup of one 3 M-row tenant against pg_dump, side by side.

Whole processes, median of BENCH_RUNS (3) runs, interleaved so that they share the machine's
state: our CLI with PREFECT_API_URL pointing at a running Prefect server,
``pg_dump --data-only -Fc`` of the same tables, and ``pg_dump --data-only -Fd -j2 -Z0`` (the
COPY floor); then the other formats and codecs (bench/formats.py); then our CLI without a server,
on the big tenant and on a small one (bench/first_contact.py). Exits non-zero when a goal is
missed: backup <= 0.5x pg_dump -Fc, peak RSS <= 250 MB (CSV and JSON writers), full restore
<= 1.0x pg_restore, a refusal <= 2 s and a small tenant's backup or restore <= 5 s without a server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import RUNS, Timing, bench_database, peak_rss_of, prefect_server, report
from bench.first_contact import GOAL_REFUSAL_S, GOAL_SMALL_S, first_contact_rounds
from bench.formats import format_rounds
from bench.restore import restore_rounds
from tenant_backup.tenancy.profiles import load_profile

GOAL_RATIO = 0.5
GOAL_RSS_MB = 250.0
GOAL_FULL_RESTORE = 1.0
GOAL_CHANGED_RESTORE = 0.2


def main() -> int:
    url, tenant = bench_database()
    tables = load_profile("pos").tables_for(None)
    work = tempfile.mkdtemp(prefix="tb-bench-")
    store = f"file://{work}/store"
    cli = [sys.executable, "-m", "tenant_backup.cli", "backup", "--db", url, "--storage", store]
    cli += ["--tenant", tenant, "--profile", "pos", "--force", "--json"]
    table_args = [arg for t in tables for arg in ("-t", f"public.{t}")]
    dump = Path(work) / "d.dump"
    ours = Timing("tenant-backup (CLI, running Prefect server)")
    fc = Timing("pg_dump --data-only -Fc")
    floor = Timing("pg_dump --data-only -Fd -j2 -Z0 (COPY floor)")
    serverless = Timing("tenant-backup (CLI, no Prefect server)")
    result: dict[str, object] = {}
    try:
        with prefect_server() as env:
            print(
                f"Prefect server at {env['PREFECT_API_URL']}; one untimed warm-up run, then {RUNS} runs each ...",
                flush=True,
            )
            # Warm-up (as hyperfine --warmup): a just-started server is still busy with its own start-up,
            # and the first run pays for cold caches that every later run, and pg_dump, find warm.
            peak_rss_of(cli, env)
            shutil.rmtree(f"{work}/store", ignore_errors=True)
            for i in range(RUNS):
                shutil.rmtree(f"{work}/store", ignore_errors=True)
                seconds, rss, out = peak_rss_of(cli, env)
                result = json.loads(out)
                ours.add(seconds, rss)
                fc.add(*peak_rss_of(["pg_dump", "--data-only", "-Fc", *table_args, "-f", str(dump), "-d", url])[:2])
                fc.note = f"{dump.stat().st_size / 1e6:.0f} MB"  # the last dump is kept for pg_restore
                floor.add(
                    *peak_rss_of(
                        ["pg_dump", "--data-only", "-Fd", "-j2", "-Z0", *table_args, "-f", f"{work}/dir", "-d", url]
                    )[:2]
                )
                shutil.rmtree(f"{work}/dir", ignore_errors=True)
                print(
                    f"  backup run {i + 1}: ours {ours.seconds[-1]:.2f} s, -Fc {fc.seconds[-1]:.2f} s, "
                    f"-Fd -j2 {floor.seconds[-1]:.2f} s",
                    flush=True,
                )
            print("restores ...", flush=True)
            restores = restore_rounds(url, store, str(result["backup_id"]), str(dump), env)
            print("other formats ...", flush=True)
            formats = format_rounds(url, tenant, env, work)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        for _ in range(RUNS):
            shutil.rmtree(f"{work}/store", ignore_errors=True)
            serverless.add(*peak_rss_of(cli, env)[:2])
        print("first contact (CLI without a server, a small tenant) ...", flush=True)
        contact, contact_met = first_contact_rounds(url, store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours.note = f"{int(str(result['file_size'])) / 1e6:.0f} MB, {int(str(result['record_count'])):,} rows"
    report([ours, fc, floor], fc)
    report([serverless], fc)
    report(contact, contact[-2])
    full, theirs, changed = restores
    report(restores, theirs)
    report([ours, *formats], ours)
    json_rss = max(t.peak for t in formats if "format json" in t.name)
    ratio = ours.median / fc.median
    full_ratio, changed_ratio = full.median / theirs.median, changed.median / theirs.median
    print(
        f"\nbackup / pg_dump -Fc = {ratio:.2f} (goal <= {GOAL_RATIO}); backup / COPY floor = "
        f"{ours.median / floor.median:.2f}; peak RSS {ours.peak:.0f} MB (goal <= {GOAL_RSS_MB:.0f})\n"
        f"restore of the emptied tenant / pg_restore = {full_ratio:.2f} (goal <= {GOAL_FULL_RESTORE}); "
        f"restore after 1 % changed / pg_restore = {changed_ratio:.2f} (goal <= {GOAL_CHANGED_RESTORE}"
        f"{'; not met yet, see the README' if changed_ratio > GOAL_CHANGED_RESTORE else ''})\n"
        f"JSON writer peak RSS {json_rss:.0f} MB (goal <= {GOAL_RSS_MB:.0f})\n"
        f"without a server: refusals {max(t.median for t in contact[:2]):.2f} s (goal <= {GOAL_REFUSAL_S:.0f}), "
        f"small tenant backup {contact[2].median:.2f} s and restore {contact[3].median:.2f} s "
        f"(goal <= {GOAL_SMALL_S:.0f}): {'met' if contact_met else 'NOT MET'}"
    )
    ok = ratio <= GOAL_RATIO and max(ours.peak, json_rss) <= GOAL_RSS_MB and full_ratio <= GOAL_FULL_RESTORE
    ok = ok and contact_met
    print("goals met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
