"""``verify-all`` and ``status``: is every tenant's newest backup recent, and does it restore?"""

from __future__ import annotations

import argparse
from typing import Any

from tenant_backup.cli.execute import local_runner, prefect_api, run_flow
from tenant_backup.cli.output import count, table
from tenant_backup.errors import TenantsFailedError

__all__ = ["cmd_status", "cmd_verify_all"]


def cmd_verify_all(args: argparse.Namespace) -> dict[str, Any]:
    from tenant_backup.settings import get_settings

    try:
        if prefect_api():
            outcomes = run_flow("flows.watch:verify_backups", sample=args.sample)
        else:
            from flows.sequences.watch import verify_backups

            outcomes = verify_backups(local_runner(), args.sample, get_settings().tenant_concurrency, None, None)
        out: dict[str, Any] = {"outcomes": [o.model_dump(mode="json") for o in outcomes]}
    except TenantsFailedError as exc:
        _print_verdicts(args, (exc.output or {}).get("outcomes", []))
        raise
    _print_verdicts(args, out["outcomes"])
    return out


def _print_verdicts(args: argparse.Namespace, outcomes: list[dict[str, Any]]) -> None:
    if args.json:
        return
    failed = sum(o["status"] == "failed" for o in outcomes)
    print(
        f"{count(len(outcomes), 'backup')} verified (each tenant's newest): {len(outcomes) - failed} passed, "
        f"{failed} failed"
    )
    for o in outcomes:
        verdict = "FAILED" if o["status"] == "failed" else "passed"
        print(f"  {verdict:<7} {o['tenant_id']}  backup {o['backup_id']}" + (f": {o['error']}" if o["error"] else ""))


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    from flows.sequences.watch import check_freshness

    try:
        found = check_freshness(local_runner(), args.profile, args.tenant_column, None)
        out: dict[str, Any] = {"tenants": [{**s.model_dump(mode="json"), "reason": s.reason} for s in found]}
    except TenantsFailedError as exc:
        _print_statuses(args, (exc.output or {}).get("tenants", []))
        raise
    _print_statuses(args, out["tenants"])
    return out


def _print_statuses(args: argparse.Namespace, tenants: list[dict[str, Any]]) -> None:
    if args.json:
        return
    attention = sum(t["state"] != "ok" for t in tenants)
    print(f"{count(len(tenants), 'tenant')}, {attention} needing attention")
    if tenants:
        print(
            table(
                ["tenant", "name", "state", "newest backup (UTC)", "age h", "promised h", "verified", "why"],
                [
                    [
                        t["tenant_id"],
                        t["tenant_name"] or "-",
                        t["state"],
                        (t["newest_at"] or "-")[:16].replace("T", " "),
                        "-" if t["age_hours"] is None else f"{t['age_hours']:.1f}",
                        f"{t['promised_hours']:g}",
                        t["verification"] or "-",
                        "" if t["state"] == "ok" else t["reason"],
                    ]
                    for t in tenants
                ],
                right=(4, 5),
            )
        )
