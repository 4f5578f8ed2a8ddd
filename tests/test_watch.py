"""Knowing, without looking, that every tenant has a recent backup that really restores: verify-all
records each verdict on the backup, status and the check-freshness flow fail on a stale, never
backed-up or failing tenant. Real PostgreSQL; the flows against a real Prefect API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DemoDatabase
from tests.test_encryption import _cli, _json, _key


def _backup(db: DemoDatabase, tenant: str, where: list[str]) -> dict[str, Any]:
    return _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where, "--json"))


def _row(db: DemoDatabase, backup_id: str) -> tuple[Any, ...]:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT verification, verification_error, verified_at FROM tenant_backup.backups WHERE id = %s",
            (backup_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_verify_all_records_each_verdict_and_status_names_the_stale_the_never_and_the_failed(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    fresh, old, never = pos_db.tenants
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    first = _backup(pos_db, fresh.id, where)
    aged = _backup(pos_db, old.id, where)
    with pos_db.connect() as conn:  # taken 30 h ago: past the default promise of 24 h (+1 h of grace)
        conn.execute(
            "UPDATE tenant_backup.backups SET completed_at = now() - interval '30 hours' WHERE id = %s",
            (aged["backup_id"],),
        )
    status = _cli("status", *where[:2], "--profile", "pos", "--json")
    assert status.returncode == 3
    states = {t["tenant_id"]: t for t in json.loads(status.stdout)["tenants"]}
    assert (states[fresh.id]["state"], states[old.id]["state"], states[never.id]["state"]) == ("ok", "stale", "never")
    assert "30.0 h old; 25 h promised (default 24 h)" in states[old.id]["reason"]
    # A weekly schedule promises a week: the same backup is fresh then.
    with pos_db.connect() as conn:
        conn.execute(
            "INSERT INTO tenant_backup.backup_schedules (tenant_id, nom, frequence, jour_semaine) "
            "VALUES (%s, 'weekly', 'weekly', 1)",
            (old.id,),
        )
    states = {t["tenant_id"]: t for t in json.loads(_cli("status", *where[:2], "--json").stdout)["tenants"]}
    assert states[old.id]["state"] == "ok" and never.id not in states  # without a profile: the ledger's tenants

    done = _cli("verify-all", *where, "--json")
    assert done.returncode == 0, done.stderr
    assert {o["backup_id"] for o in json.loads(done.stdout)["outcomes"]} == {first["backup_id"], aged["backup_id"]}
    assert _row(pos_db, first["backup_id"])[0] == "passed"
    # The newest backup of a tenant is damaged in storage: its verification fails, and says why.
    Path(first["storage_path"].removeprefix("file://")).write_bytes(b"PK\x03\x04 not a zip any more")
    with pos_db.connect() as conn:  # verified last: a sample of one takes the other
        conn.execute("UPDATE tenant_backup.backups SET verified_at = now() WHERE id = %s", (first["backup_id"],))
    failed = _cli("verify-all", *where, "--sample", "1")  # a rotation: the one verified longest ago
    assert failed.returncode == 0, failed.stderr  # it verified the other tenant's backup
    failed = _cli("verify-all", *where)
    assert failed.returncode == 3 and f"backup {first['backup_id']}" in failed.stderr
    assert "FAILED" in failed.stdout and "passed" in failed.stdout
    verdict, why, at = _row(pos_db, first["backup_id"])
    assert verdict == "failed" and "does not match the ledger's checksum" in why and at is not None
    states = {t["tenant_id"]: t for t in json.loads(_cli("status", *where[:2], "--json").stdout)["tenants"]}
    assert states[fresh.id]["state"] == "failed" and "failed verification" in states[fresh.id]["reason"]
    listed = _json(_cli("list", *where[:2], "--tenant", fresh.id, "--json"))
    assert listed["backups"][0]["verification"] == "failed"
    # A newer backup that failed makes the tenant failed too, with the backup's error.
    with pos_db.connect() as conn:
        conn.execute(
            "INSERT INTO tenant_backup.backups (tenant_id, tenant_column, nom, type, format, status, error_message) "
            "VALUES (%s, 'etablissement_id', 'x', 'full', 'csv', 'failed', 'storage s3://x cannot be reached')",
            (old.id,),
        )
    states = {t["tenant_id"]: t for t in json.loads(_cli("status", *where[:2], "--json").stdout)["tenants"]}
    assert states[old.id]["state"] == "failed" and "cannot be reached" in states[old.id]["reason"]
    # Without the identity, an encrypted backup cannot be judged: the run fails, the verdict stays unset.
    _, public = _key(tmp_path, "ops")
    sealed = _json(_cli("backup", "--tenant", never.id, "--category", "clients", "--force", "--encrypt-to", public,
                        *where, "--json"))  # fmt: skip
    unjudged = _cli("verify-all", *where)
    assert unjudged.returncode == 3 and "give the matching age identity" in unjudged.stderr
    assert _row(pos_db, sealed["backup_id"])[0] is None
    # An erased tenant that the app still lists is named as such, with what to do.
    assert _cli("erase-tenant", never.id, "--confirm", "ERASE", *where).returncode == 0
    states = {
        t["tenant_id"]: t
        for t in json.loads(_cli("status", *where[:2], "--profile", "pos", "--json").stdout)["tenants"]
    }
    assert states[never.id]["state"] == "erased" and "delete its rows from the app" in states[never.id]["reason"]


def test_the_watch_flows_fail_on_a_real_prefect_server_when_a_tenant_needs_attention(
    prefect_api: str, crm_db: DemoDatabase, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from flows.backup import backup_tenant
    from flows.watch import check_freshness, verify_backups

    env["use"](crm_db)
    monkeypatch.setenv("TENANT_BACKUP_FRESHNESS_HOURS", "1")
    backed = [backup_tenant(tenant_id=t.id, profile="crm", force=True) for t in crm_db.tenants[:2]]
    verified = verify_backups()
    assert sorted(o.backup_id for o in verified) == sorted(b.backup_id for b in backed)
    assert all(o.status == "completed" for o in verified)
    state = check_freshness(profile="crm", return_state=True)
    assert state.is_failed() and crm_db.tenants[2].id in (state.message or "")  # never backed up
    state = check_freshness(return_state=True)  # the ledger's tenants only: both fresh
    assert state.is_completed(), state.message
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    wanted = ["verify-backups", "tenant-freshness"]  # by key: the session's server holds many others
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted)), limit=50)
    assert set(wanted) <= {a.key for a in found}


def test_serve_s_automation_notifies_a_person_when_a_watched_flow_fails(
    prefect_api: str, crm_db: DemoDatabase, env: dict[str, Any]
) -> None:
    import http.server
    import threading
    import time

    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from deployments.automation import AUTOMATION_NAME, notify_on_failure
    from flows.watch import check_freshness
    from tests.conftest import free_port

    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        CustomWebhookNotificationBlock(
            name="ops", url=f"http://127.0.0.1:{port}/hook", json_data={"text": "{{subject}}: {{body}}"}
        ).save("tb-ops", overwrite=True)
        first = notify_on_failure("custom-webhook/tb-ops")
        again = notify_on_failure("custom-webhook/tb-ops")  # serve again: replaced, not doubled
        assert first is not None and again is not None and first.id != again.id
        assert Automation.read(name=AUTOMATION_NAME).id == again.id  # type: ignore[union-attr]
        env["use"](crm_db)
        assert check_freshness(profile="crm", return_state=True).is_failed()  # nothing backed up: never
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            time.sleep(0.5)
        assert received, "no notification within 60 s"
        assert b"check-freshness failed" in received[0] and b"need attention" in received[0]
    finally:
        server.shutdown()
