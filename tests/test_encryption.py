"""Encrypted artifacts (age): written to public recipients, opened by Debian's ``age`` command line
tool, restored with either of two identities, refused by name without one, key rotation, damage,
and bounded memory. Real PostgreSQL, the moto S3 server, the CLI in its own process."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from tenant_backup.ledger import LEDGER_VERSION
from tests.conftest import DemoDatabase
from tests.helpers import state_of

AGE_MAGIC = b"age-encryption.org/v1\n"


def _need_age() -> None:
    if not (shutil.which("age") and shutil.which("age-keygen")):
        pytest.fail("the age command line tool is needed: apt-get install age (make install does it)")


def _key(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A new age key file (age-keygen's own) and its public key."""
    _need_age()
    path = tmp_path / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
    return path, public.stdout.strip()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TENANT_BACKUP_"))}
    base["PREFECT_HOME"] = os.environ.get("PYTEST_PREFECT_HOME", "/nonexistent-prefect-home")
    return subprocess.run(
        [sys.executable, "-m", "tenant_backup.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=180,
    )


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def _s3(options: dict[str, Any]) -> Any:
    """A boto3 client of the moto server that ``options`` (the fsspec options) point at."""
    return boto3.client(
        "s3",
        endpoint_url=options["client_kwargs"]["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _s3_object(bucket_url: str, options: dict[str, Any], storage_path: str) -> bytes:
    bucket = bucket_url.removeprefix("s3://").split("/", 1)[0]
    key = storage_path.removeprefix(f"s3://{bucket}/")
    body: bytes = _s3(options).get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def _ledger_row(db: DemoDatabase, backup_id: str) -> tuple[Any, ...]:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT encrypted_to, checksum, storage_path FROM tenant_backup.backups WHERE id = %s", (backup_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("fmt", ["csv", "json", "sql"])
def test_an_encrypted_backup_opens_with_the_age_cli_and_restores_with_either_of_its_two_keys(
    fmt: str, pos_db: DemoDatabase, s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    storage, options = s3_bucket
    ops, ops_public = _key(tmp_path, "ops")
    offline, offline_public = _key(tmp_path, "offline")
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", storage, "--storage-options", json.dumps(options), "--json"]
    before = state_of(pos_db.url, "pos", tenant)
    keys = ["--encrypt-to", ops_public, "--encrypt-to", offline_public]
    backup = _json(_cli("backup", "--tenant", tenant, "--format", fmt, "--force", *keys, *where))
    assert backup["encrypted_to"] == [ops_public, offline_public]
    assert backup["storage_path"].endswith(".age")
    encrypted_to, checksum, storage_path = _ledger_row(pos_db, backup["backup_id"])
    assert encrypted_to == [ops_public, offline_public] and storage_path == backup["storage_path"]
    stored = _s3_object(storage, options, storage_path)
    assert stored.startswith(AGE_MAGIC) and checksum == f"sha256:{hashlib.sha256(stored).hexdigest()}"
    # Any operator opens it with the age command line tool and either key; the manifest is inside.
    (tmp_path / "stored.age").write_bytes(stored)
    for identity in (ops, offline):
        plain = subprocess.run(
            ["age", "-d", "-i", str(identity), str(tmp_path / "stored.age")], check=True, capture_output=True
        ).stdout
        if fmt == "csv":
            with zipfile.ZipFile(io.BytesIO(plain)) as archive:
                assert archive.testzip() is None
                manifest = json.loads(archive.read("manifest.json"))
        elif fmt == "json":
            head = gzip.decompress(plain).split(b"\n", 1)[0]
            manifest = json.loads(head.removesuffix(b', "data": {') + b"}")["manifest"]
        else:
            line = next(x for x in gzip.decompress(plain).splitlines() if x.startswith(b"-- manifest: "))
            manifest = json.loads(line.removeprefix(b"-- manifest: "))
        assert manifest["backup_id"] == backup["backup_id"]
    assert b"etablissement_id" not in stored and tenant.encode() not in stored[200:]  # nothing readable
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET points_fidelite = points_fidelite + 7 WHERE etablissement_id = %s", (tenant,))
    done = _json(_cli("restore", backup["backup_id"], "--confirm", "RESTORE", "--identity", str(offline), *where))
    assert done["backup_id"] == backup["backup_id"] and state_of(pos_db.url, "pos", tenant) == before
    verified = _cli("verify", backup["backup_id"], *where, env={"TENANT_BACKUP_IDENTITIES": ops.read_text()})
    assert verified.returncode == 0, verified.stderr
    shown = _cli("show", backup["backup_id"], "--table", "clients", "--head", "2", "--identity", str(ops), *where)
    assert shown.returncode == 0 and json.loads(shown.stdout)["rows"], shown.stderr
    refused = _cli("show", backup["backup_id"], *where)
    assert refused.returncode == 2 and json.loads(refused.stdout)["backup_id"] == backup["backup_id"]


def test_without_a_matching_identity_an_encrypted_backup_is_refused_naming_its_recipients(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    ops, ops_public = _key(tmp_path, "ops")
    other, other_public = _key(tmp_path, "other")
    tenant = pos_db.tenants[1].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where, "--json",
                        env={"TENANT_BACKUP_RECIPIENTS": ops_public.upper()}))  # fmt: skip
    assert backup["encrypted_to"] == [ops_public]  # the environment's, as a deployment sets them; canonical
    with pos_db.connect() as conn:
        conn.execute("UPDATE clients SET points_fidelite = 1 WHERE etablissement_id = %s", (tenant,))
    changed = state_of(pos_db.url, "pos", tenant)
    for given, held in (([], None), (["--identity", str(other)], other_public)):
        refused = _cli("restore", backup["backup_id"], "--confirm", "RESTORE", *given, *where)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"backup {backup['backup_id']}" in refused.stderr and ops_public in refused.stderr
        assert held is None or held in refused.stderr
        assert "AGE-SECRET-KEY" not in refused.stderr + refused.stdout
        assert state_of(pos_db.url, "pos", tenant) == changed
    # A downloaded copy, outside the ledger: age hides its recipients, so the message names the keys at hand.
    copy = tmp_path / "copy.zip.age"
    shutil.copy(backup["storage_path"].removeprefix("file://"), copy)
    refused = _cli("restore", "--file", str(copy), "--confirm", "RESTORE", "--identity", str(other), *where)
    assert refused.returncode == 2 and "cannot be decrypted" in refused.stderr and other_public in refused.stderr
    public_file = tmp_path / "public.txt"
    public_file.write_text(f"# created: today\n{ops_public}\n")
    refused = _cli("restore", "--file", str(copy), "--dry-run", "--identity", str(public_file), *where)
    assert refused.returncode == 2 and "line 2: a public key" in refused.stderr, refused.stderr
    done = _cli("restore", "--file", str(copy), "--confirm", "RESTORE", "--identity", str(ops), *where)
    assert done.returncode == 0, done.stderr
    assert state_of(pos_db.url, "pos", tenant) != changed


def test_after_a_key_rotation_new_backups_go_to_the_new_key_and_old_ones_stay_readable(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    old, old_public = _key(tmp_path, "old")
    new, new_public = _key(tmp_path, "new")
    tenant = pos_db.tenants[2].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    args = ("backup", "--tenant", tenant, "--category", "produits", "--force", *where)
    first = _json(_cli(*args, env={"TENANT_BACKUP_RECIPIENTS": old_public}))
    second = _json(_cli(*args, env={"TENANT_BACKUP_RECIPIENTS": f"{new_public}, "}))
    assert (first["encrypted_to"], second["encrypted_to"]) == ([old_public], [new_public])
    both = tmp_path / "both.txt"
    both.write_text(old.read_text() + new.read_text())
    for backup in (first, second):
        assert _cli("verify", backup["backup_id"], "--identity", str(both), *where).returncode == 0
    assert _cli("verify", second["backup_id"], "--identity", str(new), *where).returncode == 0
    refused = _cli("verify", first["backup_id"], "--identity", str(new), *where)
    assert refused.returncode == 2 and old_public in json.loads(refused.stdout)["error"]


def test_a_bad_recipient_is_refused_before_any_work_and_a_private_key_given_as_one_is_never_echoed(
    pos_db: DemoDatabase, tmp_path: Path
) -> None:
    secret_file, _ = _key(tmp_path, "k")
    secret = next(line for line in secret_file.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    with pos_db.connect() as conn:
        count = conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone()
    for recipient, hint in (
        (secret, "that is a private key"),
        ("ssh-ed25519 AAAAC3Nza", "starts with age1"),
        (f"age1{'q' * 58}", "mistyped or cut short"),
        ("", "empty recipient"),  # --encrypt-to "$UNSET": never a quiet plain backup
    ):
        refused = _cli("backup", "--tenant", tenant, "--force", "--encrypt-to", recipient, *where)
        assert refused.returncode == 2 and hint in refused.stderr, refused.stderr
        assert secret not in refused.stderr + refused.stdout
    given = _key(tmp_path, "given")[1]
    for variable in ("ssh-rsa AAA", " , "):  # checked even when --encrypt-to is given
        refused = _cli("backup", "--tenant", tenant, "--force", "--encrypt-to", given, *where,
                       env={"TENANT_BACKUP_RECIPIENTS": variable})  # fmt: skip
        assert refused.returncode == 2 and "TENANT_BACKUP_RECIPIENTS" in refused.stderr
    with pos_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone() == count
    assert not (tmp_path / "store").exists()


def test_an_altered_or_truncated_encrypted_artifact_is_refused_as_damaged(pos_db: DemoDatabase, tmp_path: Path) -> None:
    key, public = _key(tmp_path, "k")
    tenant = pos_db.tenants[0].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store"]
    backup = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", "--encrypt-to", public,
                        *where, "--json"))  # fmt: skip
    stored = Path(backup["storage_path"].removeprefix("file://")).read_bytes()
    flipped = bytearray(stored)
    flipped[len(stored) // 2] ^= 0x01
    header = stored.index(b"\n---") + 1
    header_end = stored.index(b"\n", header) + 1
    mac = bytearray(stored)
    mac[header + 6] ^= 0x01
    for name, data, says in (
        ("flipped", bytes(flipped), "fails its authentication"),
        ("truncated", stored[: len(stored) - 100], "fails its authentication"),
        ("header", bytes(mac), "header is damaged"),
        ("headless", stored[:header_end], "header is damaged"),  # cut right after its header
    ):
        damaged = tmp_path / f"{name}.zip.age"
        damaged.write_bytes(data)
        refused = _cli("restore", "--file", str(damaged), "--confirm", "RESTORE", "--identity", str(key), *where)
        assert refused.returncode == 2 and says in refused.stderr, (name, refused.stderr)
    # In the ledger's storage, an altered object fails the ledger's checksum before it is decrypted.
    Path(backup["storage_path"].removeprefix("file://")).write_bytes(bytes(flipped))
    refused = _cli("verify", backup["backup_id"], "--identity", str(key), *where)
    assert refused.returncode == 2 and "does not match the ledger's checksum" in refused.stderr


_BOUNDED = """
import hashlib, os, resource, sys
from pathlib import Path
import pyrage
from pyrage import x25519
from tenant_backup.artifact.encryption import Encrypting, decrypt_file

identity = x25519.Identity.generate()
os.environ["TENANT_BACKUP_IDENTITIES"] = str(identity)
block, total = os.urandom(1 << 20), int(sys.argv[2]) << 20
plain = hashlib.sha256()
with open(sys.argv[1], "wb") as out, Encrypting(out, [str(identity.to_public())]) as sink:
    for _ in range(total >> 20):
        sink.write(block)
        plain.update(block)
decrypt_file(Path(sys.argv[1]), Path(sys.argv[1] + ".plain"), backup_id="b")
back = hashlib.sha256()
with open(sys.argv[1] + ".plain", "rb") as fh:
    while chunk := fh.read(1 << 20):
        back.update(chunk)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, back.hexdigest() == plain.hexdigest())
"""


def test_encryption_and_decryption_stream_with_bounded_memory(tmp_path: Path) -> None:
    sizes = {}
    for mib in (16, 400):
        done = subprocess.run(
            [sys.executable, "-c", _BOUNDED, str(tmp_path / f"{mib}.age"), str(mib)],
            capture_output=True,
            text=True,
            check=True,
        )
        peak, same = done.stdout.split()
        assert same == "True"
        sizes[mib] = int(peak)
    assert sizes[400] - sizes[16] < 16, sizes  # MiB: 25 times the bytes, the same memory


def test_ledger_of_an_unencrypted_backup_records_no_recipients(pos_db: DemoDatabase, tmp_path: Path) -> None:
    tenant = pos_db.tenants[1].id
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    backup = _json(_cli("backup", "--tenant", tenant, "--category", "clients", "--force", *where))
    assert backup["encrypted_to"] == [] and not backup["storage_path"].endswith(".age")
    assert _ledger_row(pos_db, backup["backup_id"])[0] is None
    with psycopg.connect(pos_db.url) as conn:
        assert conn.execute("SELECT obj_description('tenant_backup'::regnamespace)").fetchone() == (
            f"tenant-backup ledger v{LEDGER_VERSION}",
        )


def test_a_writer_that_fails_half_way_stops_the_encryption_and_leaves_no_age_file(tmp_path: Path) -> None:
    from pyrage import x25519

    from tenant_backup.artifact.encryption import Encrypting

    out = tmp_path / "half.age"
    with out.open("wb") as fh:
        sink = Encrypting(fh, [str(x25519.Identity.generate().to_public())])
        with pytest.raises(RuntimeError, match="a part could not be read"), sink:
            for _ in range(8):  # more than the pipe holds: the encrypting thread is busy reading
                sink.write(os.urandom(1 << 20))
            raise RuntimeError("a part could not be read")
    assert not sink._thread.is_alive()  # it ended, no hang; what it wrote, write_atomic discards
