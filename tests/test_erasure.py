"""Per-tenant keys and crypto-erasure: a tenant's backups encrypted to its own key (kept wrapped to
the operator's recipients), restored through the operator's identity; erase-tenant destroys the
key, so that a copy surviving elsewhere is unreadable, then deletes the tenant's objects and rows,
logged, admins only, with a dry run. Real PostgreSQL, the moto S3 server, the CLI in its process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DemoDatabase
from tests.helpers import state_of
from tests.test_encryption import _cli, _json, _key, _s3, _s3_object


def _bucket_keys(storage: str, options: dict[str, Any], folder: str) -> list[str]:
    bucket, _, root = storage.removeprefix("s3://").partition("/")
    found = _s3(options).list_objects_v2(Bucket=bucket, Prefix=f"{root}/").get("Contents", [])
    return [o["Key"] for o in found if f"/{folder}/" in o["Key"]]


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The operator's key: one for the module, as one operator wraps every tenant's key."""
    return _key(tmp_path_factory.mktemp("operator"), "ops")


def _one(db: DemoDatabase, query: str, *params: Any) -> Any:
    with db.connect() as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def test_erasing_a_tenant_makes_a_surviving_copy_unreadable_and_deletes_its_objects_and_rows(
    pos_db: DemoDatabase, s3_bucket: tuple[str, dict[str, Any]], operator: tuple[Path, str], tmp_path: Path
) -> None:
    storage, options = s3_bucket
    ops, ops_public = operator
    tenant, other = pos_db.tenants[0].id, pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", storage, "--storage-options", json.dumps(options), "--json"]
    keyed = ["--encrypt-to", ops_public, "--tenant-key", "--force"]
    first = _json(_cli("backup", "--tenant", tenant, "--category", "clients", *keyed, *where))
    second = _json(_cli("backup", "--tenant", tenant, "--category", "produits", *keyed, *where))
    plain = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where))
    kept = _json(_cli("backup", "--tenant", other, "--category", "clients", *keyed, *where))
    tenant_key = _one(pos_db, "SELECT recipient FROM tenant_backup.tenant_keys WHERE tenant_id = %s", tenant)
    assert first["encrypted_to"] == second["encrypted_to"] == [tenant_key] != kept["encrypted_to"]
    assert tenant_key != ops_public  # the tenant's own key; the operator's key only wraps it
    with pos_db.connect() as conn:
        conn.execute(
            "INSERT INTO tenant_backup.backup_schedules (tenant_id, nom, frequence) VALUES (%s, 'nightly', 'daily')",
            (tenant,),
        )
    # Readable through the operator's identity while the key lives; a copy goes to a "replica".
    before = state_of(pos_db.url, "pos", tenant)
    done = _cli("restore", first["backup_id"], "--confirm", "RESTORE", "--identity", str(ops), *where)
    assert done.returncode == 0 and state_of(pos_db.url, "pos", tenant) == before, done.stderr
    replica = tmp_path / "replica.zip.age"
    replica.write_bytes(_s3_object(storage, options, first["storage_path"]))
    plain_copy = tmp_path / "plain.zip"  # a plain backup's download: erasure cannot reach it
    plain_copy.write_bytes(_s3_object(storage, options, plain["storage_path"]))
    folder = first["storage_path"].rsplit("/", 2)[-2]
    assert len(_bucket_keys(storage, options, folder)) == 3

    dry = _json(_cli("erase-tenant", tenant, "--dry-run", *where))
    assert dry["key"] == tenant_key and set(dry["backups"]) >= {first["backup_id"], second["backup_id"]}
    assert len(dry["objects"]) == 3 and dry["readable_copies"] == [plain["backup_id"]] and dry["schedules"] == 1
    refused = _cli("erase-tenant", tenant, *where)
    assert refused.returncode == 2 and "--confirm ERASE" in refused.stderr
    assert len(_bucket_keys(storage, options, folder)) == 3  # the dry run and the refusal changed nothing
    assert _one(
        pos_db, "SELECT wrapped_identity IS NOT NULL FROM tenant_backup.tenant_keys WHERE tenant_id = %s", tenant
    )

    erased = _json(_cli("erase-tenant", tenant, "--confirm", "ERASE", *where))
    assert sorted(erased["deleted_objects"]) == sorted(dry["objects"]) and not erased["errors"]
    assert _bucket_keys(storage, options, folder) == []
    assert _one(pos_db, "SELECT count(*) FROM tenant_backup.backups WHERE tenant_id = %s", tenant) == 0
    assert _one(pos_db, "SELECT count(*) FROM tenant_backup.backup_schedules WHERE tenant_id = %s", tenant) == 0
    assert _one(pos_db, "SELECT wrapped_identity FROM tenant_backup.tenant_keys WHERE tenant_id = %s", tenant) is None
    logged = _one(
        pos_db,
        "SELECT details FROM tenant_backup.backup_restore_logs WHERE tenant_id = %s AND action = 'erase' "
        "AND result = 'success'",
        tenant,
    )
    assert logged["key"] == tenant_key and logged["backups"] == 3 and logged["objects"] == 3
    # The surviving copy: no identity anyone holds opens it, with our tool or with age itself.
    refused = _cli("restore", "--file", str(replica), "--confirm", "RESTORE", "--identity", str(ops), *where)
    assert refused.returncode == 2 and "cannot be decrypted" in refused.stderr
    by_age = subprocess.run(["age", "-d", "-i", str(ops), str(replica)], capture_output=True)
    assert by_age.returncode != 0 and b"no identity matched" in by_age.stderr.lower()
    # The erased id is not backed up again; the other tenant's backups are untouched and readable.
    again = _cli("backup", "--tenant", tenant, "--category", "clients", *keyed, *where)
    assert again.returncode == 2 and "was erased on" in again.stderr
    back = _cli("restore", "--file", str(plain_copy), "--dry-run", *where)  # nor brought back from a copy
    assert back.returncode == 2 and "is not restored into again" in back.stderr, back.stderr
    twice = _cli("erase-tenant", tenant, "--confirm", "ERASE", *where)
    assert twice.returncode == 2 and "nothing here to erase (it was erased on" in twice.stderr
    assert _cli("verify", kept["backup_id"], "--identity", str(ops), *where).returncode == 0


def test_a_tenant_key_needs_operator_recipients_and_its_backups_need_the_operator_identity(
    pos_db: DemoDatabase, operator: tuple[Path, str], tmp_path: Path
) -> None:
    ops, ops_public = operator
    stranger, stranger_public = _key(tmp_path, "stranger")
    tenant = pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    refused = _cli("backup", "--tenant", tenant, "--tenant-key", "--force", *where)
    assert refused.returncode == 2 and "--encrypt-to" in json.loads(refused.stdout)["error"]
    backup = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where,
                        env={"TENANT_BACKUP_RECIPIENTS": ops_public, "TENANT_BACKUP_TENANT_KEYS": "true"}))  # fmt: skip
    assert backup["encrypted_to"] != [ops_public] and len(backup["encrypted_to"]) == 1
    refused = _cli("verify", backup["backup_id"], "--identity", str(stranger), *where)
    error = json.loads(refused.stdout)["error"]
    assert refused.returncode == 2 and f"wrapped to {ops_public}" in error and stranger_public in error
    assert _cli("verify", backup["backup_id"], "--identity", str(ops), *where).returncode == 0


def test_only_an_admin_of_the_tenant_may_erase_it_and_a_refusal_erases_nothing(
    pos_db: DemoDatabase, operator: tuple[Path, str], tmp_path: Path
) -> None:
    _, ops_public = operator
    tenant = pos_db.tenants[1]
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    _json(_cli("backup", "--tenant", tenant.id, "--category", "clients", "--force", "--encrypt-to", ops_public,
               "--tenant-key", *where))  # fmt: skip
    for user in (tenant.member_id, pos_db.tenants[0].admin_id):  # a member; an admin of another tenant
        refused = _cli("erase-tenant", tenant.id, "--confirm", "ERASE", "--requested-by", user, *where)
        assert refused.returncode == 2 and "admin" in json.loads(refused.stdout)["error"]
    assert _one(pos_db, "SELECT wrapped_identity IS NOT NULL FROM tenant_backup.tenant_keys WHERE tenant_id = %s",
                tenant.id)  # fmt: skip
    assert _one(pos_db, "SELECT count(*) FROM tenant_backup.backups WHERE tenant_id = %s", tenant.id) >= 1
    spelled = tenant.id.upper()  # the same tenant: its key is destroyed all the same
    done = _json(_cli("erase-tenant", spelled, "--confirm", "ERASE", "--requested-by", tenant.admin_id, *where))
    assert done["deleted_backups"] and not list((tmp_path / "store").rglob("*.age"))
    assert done["tenant_id"] == tenant.id and done["key"]
    assert (
        _one(pos_db, "SELECT wrapped_identity FROM tenant_backup.tenant_keys WHERE tenant_id = %s", tenant.id) is None
    )
    failed = _one(
        pos_db,
        "SELECT count(*) FROM tenant_backup.backup_restore_logs WHERE tenant_id = %s AND action = 'erase' "
        "AND result = 'failed'",
        tenant.id,
    )
    assert failed == 2


def test_an_unknown_tenant_id_is_refused_rather_than_reported_erased(pos_db: DemoDatabase, tmp_path: Path) -> None:
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    typo = pos_db.tenants[2].id[:-1] + ("0" if pos_db.tenants[2].id[-1] != "0" else "1")
    for args in (("--dry-run",), ("--confirm", "ERASE")):
        refused = _cli("erase-tenant", typo, *args, *where)
        assert (
            refused.returncode == 2
            and "has nothing here to erase" in refused.stderr
            and "check the id" in refused.stderr
        )
    assert _one(pos_db, "SELECT count(*) FROM tenant_backup.tenant_keys WHERE tenant_id = %s", typo) == 0


def test_rewrap_keys_moves_every_tenant_key_to_the_new_operator_key(
    pos_db: DemoDatabase, operator: tuple[Path, str], tmp_path: Path
) -> None:
    old, old_public = operator
    new, new_public = _key(tmp_path, "new")
    tenant = pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    backup = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", "--encrypt-to", old_public,
                        "--tenant-key", *where))  # fmt: skip
    warned = _cli("backup", "--tenant", tenant, "--category", "clients", "--force", "--encrypt-to", new_public,
                  "--tenant-key", *where)  # fmt: skip
    assert warned.returncode == 0 and "run tenant-backup rewrap-keys" in warned.stderr
    db = [*where[:2], "--json"]  # rewrap-keys needs the ledger only
    refused = _cli("rewrap-keys", "--encrypt-to", new_public, "--identity", str(new), *db)
    assert refused.returncode == 2 and "nothing was changed" in json.loads(refused.stdout)["error"]
    done = _json(_cli("rewrap-keys", "--encrypt-to", new_public, "--identity", str(old), *db))
    assert tenant in done["rewrapped"]
    assert _one(pos_db, "SELECT wrapped_to FROM tenant_backup.tenant_keys WHERE tenant_id = %s", tenant) == [new_public]
    assert _cli("verify", backup["backup_id"], "--identity", str(new), *where).returncode == 0  # old backups too
    assert _cli("verify", backup["backup_id"], "--identity", str(old), *where).returncode == 2
    assert _json(_cli("rewrap-keys", "--encrypt-to", new_public, *db))["rewrapped"] == []  # nothing left to do
