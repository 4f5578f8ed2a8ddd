"""The CLI contract: one JSON object on stdout with --json; one line on stderr and a non-zero
exit status on error. Runs as a separate process against the session's Prefect API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DemoDatabase


def run(prefect_api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANT_BACKUP_")}
    env["PREFECT_API_URL"] = prefect_api
    return subprocess.run(
        [sys.executable, "-m", "tenant_backup.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_backup_json_is_one_object_with_the_contract_keys(
    prefect_api: str, pos_db: DemoDatabase, tmp_path: Path
) -> None:
    tenant = pos_db.tenants[0]
    store = f"file://{tmp_path}/store"
    assert run(prefect_api, "migrate", "--db", pos_db.url).returncode == 0
    done = run(
        prefect_api,
        "backup",
        "--db",
        pos_db.url,
        "--storage",
        store,
        "--tenant",
        tenant.id,
        "--profile",
        "pos",
        "--category",
        "ventes",
        "--category",
        "clients",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)  # exactly one JSON document: anything else fails here
    assert {"backup_id", "status", "storage_path", "checksum", "record_count", "tables"} <= set(out)
    assert out["status"] == "completed" and out["checksum"].startswith("sha256:")
    assert Path(out["storage_path"].removeprefix("file://")).is_file()
    assert set(out["tables"]) == {"ventes", "lignes_vente", "paiements", "sessions_caisse", "clients"}
    assert out["record_count"] == sum(out["tables"].values())

    listed = run(prefect_api, "list", "--db", pos_db.url, "--tenant", tenant.id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["backups"]
    assert rows[0]["id"] == out["backup_id"] and rows[0]["status"] == "completed"

    text = run(prefect_api, "list", "--db", pos_db.url, "--tenant", tenant.id)
    assert out["backup_id"][:8] in text.stdout and "completed" in text.stdout  # a short id, as git shows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--category", "factures"], "error: unknown category 'factures'"),
        (["--tenant-column", "nope"], "error: no table of schema 'public' has column 'nope'"),
    ],
)
def test_errors_are_one_line_on_stderr_and_nonzero(
    prefect_api: str, pos_db: DemoDatabase, tmp_path: Path, args: list[str], message: str
) -> None:
    tenant = pos_db.tenants[1]
    failed = run(
        prefect_api,
        "backup",
        "--db",
        pos_db.url,
        "--storage",
        f"file://{tmp_path}",
        "--tenant",
        tenant.id,
        "--json",
        *args,
    )
    assert failed.returncode == 2
    body = json.loads(failed.stdout)  # with --json, a failure too is one object on stdout; the line is on stderr
    assert body["status"] == "error" and body["exit_code"] == 2
    assert body["error"] == failed.stderr.removeprefix("error: ").strip()
    assert failed.stderr.startswith(message) and failed.stderr.count("\n") == 1, failed.stderr


def test_bad_database_url_is_a_clear_error(prefect_api: str, tmp_path: Path) -> None:
    failed = run(prefect_api, "list", "--db", "postgresql://postgres@127.0.0.1:1/none", "--json")
    assert failed.returncode == 2 and json.loads(failed.stdout)["exit_code"] == 2
    assert failed.stderr.startswith("error: cannot connect to the database") and failed.stderr.count("\n") == 1


def test_restore_and_verify_json(prefect_api: str, crm_db: DemoDatabase, tmp_path: Path) -> None:
    tenant = crm_db.tenants[2]
    store = f"file://{tmp_path}/store"
    common = ["--db", crm_db.url, "--storage", store, "--json"]
    done = run(
        prefect_api, "backup", "--tenant", tenant.id, "--profile", "crm", "--category", "sales", "--force", *common
    )
    backup = json.loads(done.stdout)["backup_id"]
    with crm_db.connect() as conn:
        conn.execute("UPDATE leads SET score = -1 WHERE company_id = %s", (tenant.id,))
        conn.execute(
            "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE company_id = %s)", (tenant.id,)
        )

    refused = run(prefect_api, "restore", backup, *common)
    assert refused.returncode == 2 and json.loads(refused.stdout)["status"] == "error"
    assert "pass --confirm RESTORE" in refused.stderr and refused.stderr.count("\n") == 1

    verified = run(prefect_api, "verify", backup, *common)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["status"] == "verified"

    dry = json.loads(run(prefect_api, "restore", backup, "--dry-run", *common).stdout)
    restored = run(prefect_api, "restore", backup, "--confirm", "RESTORE", "--mode", "replace", *common)
    assert restored.returncode == 0, restored.stderr
    out = json.loads(restored.stdout)
    assert out["status"] == "completed" and out["mode"] == "replace"
    assert set(out["tables"]["order_items"]) >= {"inserted", "updated", "deleted"}
    assert out["tables"]["order_items"]["inserted"] > 0 and out["tables"]["order_items"] == dry["tables"]["order_items"]
    assert out["tables"]["leads"]["updated"] == out["tables"]["leads"]["rows"]


def test_operations_commands_page_sign_delete_prune_and_reconcile(
    prefect_api: str, crm_db: DemoDatabase, tmp_path: Path
) -> None:
    store = f"file://{tmp_path}/ops"
    where = ["--db", crm_db.url, "--storage", store]
    ids = []
    for tenant in crm_db.tenants[:2]:
        done = run(prefect_api, "backup", *where, "--tenant", tenant.id, "--profile", "crm", "--force", "--json")
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["backup_id"])

    page = json.loads(run(prefect_api, "list", "--db", crm_db.url, "--limit", "1", "--json").stdout)
    assert page["total"] >= 2 and len(page["backups"]) == 1 and page["next_offset"] == 1
    assert json.loads(run(prefect_api, "list", "--db", crm_db.url, "--status", "failed", "--json").stdout)["total"] == 0
    only = json.loads(run(prefect_api, "list", "--db", crm_db.url, "--tenant", crm_db.tenants[1].id, "--json").stdout)
    assert [b["id"] for b in only["backups"]] == [ids[1]]

    url = json.loads(run(prefect_api, "url", ids[0], *where, "--json").stdout)["url"]
    assert Path(url).is_file()

    refused = run(prefect_api, "delete", ids[0], *where, "--json")
    assert refused.returncode == 2 and "--confirm DELETE" in json.loads(refused.stdout)["error"]

    dry = json.loads(run(prefect_api, "prune", *where, "--dry-run", "--json").stdout)
    assert dry["dry_run"] and {d["backup_id"]: d["keep"] for d in dry["decisions"]}[ids[0]] is True

    clean = json.loads(run(prefect_api, "reconcile", *where, "--json").stdout)
    assert clean["orphans"] == [] and clean["missing"] == []

    deleted = run(prefect_api, "delete", ids[0], *where, "--confirm", "DELETE", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["deleted"] and not Path(url).exists()

    no_deployment = run(prefect_api, "sync-schedules", "--db", crm_db.url, "--deployment", "backup-tenant/nowhere")
    assert no_deployment.returncode == 2 and "does not exist" in no_deployment.stderr


def test_show_prints_json_values_as_json_and_null_as_na() -> None:
    import pandas as pd

    from tenant_backup.cli.commands import frame_text

    frame = pd.DataFrame({"doc": [{"a": [1, "é"]}, None], "n": pd.array([1, None], dtype="Int64")})
    text = frame_text(frame, 10)
    assert '{"a": [1, "é"]}' in text and text.count("<NA>") == 2 and "'a'" not in text
