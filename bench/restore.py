"""Restore side of ``make bench``: ours against ``pg_restore --data-only --single-transaction``.

Per round, interleaved: (1) the tenant emptied, our full restore; (2) the tables truncated,
pg_restore of the same tables from a ``pg_dump -Fc`` taken at the backup's state; (3) 1 % of the
tenant's rows changed, our restore (which must only pay for what changed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import psycopg

from bench.common import RUNS, Timing, peak_rss_of

# Tables of the POS demo schema, children first (for TRUNCATE it does not matter, CASCADE-free).
APP_TABLES = [
    "lignes_vente",
    "paiements",
    "ventes",
    "sessions_caisse",
    "mouvements_stock",
    "supplements",
    "produits",
    "categories",
    "tables",
    "zones",
    "imprimantes",
    "clients",
    "audit_logs",
    "utilisateurs",
]
# 1 % of the rows of every big table, picked by a hash of the key (the same rows each round).
CHANGES = [
    ("lignes_vente", "notes"),
    ("ventes", "notes"),
    ("paiements", "reference"),
    ("mouvements_stock", "motif"),
    ("audit_logs", "action"),
    ("clients", "notes"),
]


def run_sql(url: str, statements: Sequence[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # fixed benchmark statements


def restore_rounds(url: str, store: str, backup_id: str, dump: str, env: dict[str, str]) -> list[Timing]:
    cli = [
        sys.executable,
        "-m",
        "tenant_backup.cli",
        "restore",
        backup_id,
        "--db",
        url,
        "--storage",
        store,
        "--confirm",
        "RESTORE",
        "--json",
    ]
    full = Timing("tenant-backup restore, emptied tenant")
    theirs = Timing("pg_restore --data-only --single-transaction")
    changed = Timing("tenant-backup restore, 1 % of rows changed")
    truncate = "TRUNCATE " + ", ".join(APP_TABLES)
    for i in range(RUNS):
        run_sql(url, [truncate])
        seconds, rss, out = peak_rss_of(cli, env)
        full.add(seconds, rss)
        full.note = f"{sum(t['inserted'] for t in json.loads(out)['tables'].values()):,} rows inserted"

        run_sql(url, [truncate + ", etablissements"])
        theirs.add(*peak_rss_of(["pg_restore", "--data-only", "--single-transaction", "-d", url, dump], env)[:2])

        run_sql(url, [f"UPDATE {t} SET {c} = 'changed' WHERE abs(hashtext(id::text)) % 100 = 0" for t, c in CHANGES])
        seconds, rss, out = peak_rss_of(cli, env)
        changed.add(seconds, rss)
        changed.note = f"{sum(t['updated'] for t in json.loads(out)['tables'].values()):,} rows updated"
        print(
            f"  restore run {i + 1}: emptied {full.seconds[-1]:.2f} s, pg_restore {theirs.seconds[-1]:.2f} s, "
            f"1 % changed {changed.seconds[-1]:.2f} s",
            flush=True,
        )
    return [full, theirs, changed]
