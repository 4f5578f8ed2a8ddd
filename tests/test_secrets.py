"""No secret is ever printed: with a database password, S3 keys and an age identity set (the
backups are encrypted; the identity comes from a Prefect Secret block, then from the
environment), every command's output (and its failures'), every ledger row, the stored artifact
(decrypted), and what the Prefect API keeps of the runs (parameters, logs, artifacts) are searched
for them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pyrage
from psycopg import sql
from pyrage import x25519

from tests.conftest import DemoDatabase

PASSWORD = "pw-SECRET/5c1d@x"  # URL-encoded in the URL; trust authentication never asks for it
KEY_ID = "AKIASECRETKEYID4TB"
SECRET = "s3-SECRET-8e2f-9a7b"
IDENTITY = x25519.Identity.generate()
AGE_SECRET = str(IDENTITY)  # AGE-SECRET-KEY-1…
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), KEY_ID, SECRET, AGE_SECRET, AGE_SECRET.lower())


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{quote(PASSWORD, safe='')}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


def _bucket(endpoint: str) -> str:
    import boto3

    name = f"tb-secret-{os.urandom(4).hex()}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    ).create_bucket(Bucket=name)
    return name


def _found(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_no_password_or_storage_key_appears_in_outputs_ledger_artifact_or_prefect_runs(
    prefect_api: str, pos_db: DemoDatabase, s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_endpoint)
    url = _with_password(pos_db.url)
    options = {
        "key": KEY_ID,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10},
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_BACKUP_", "PREFECT_", "AWS_"))}
    base |= {
        "TENANT_BACKUP_DATABASE_URL": url,
        "TENANT_BACKUP_STORAGE_URL": f"s3://{bucket}/backups",
        "TENANT_BACKUP_STORAGE_OPTIONS": json.dumps(options),
        "TENANT_BACKUP_RECIPIENTS": str(IDENTITY.to_public()),
    }
    from prefect.blocks.system import Secret

    Secret(value=f"# an operator's key\n{AGE_SECRET}\n").save("tb-age-identity", overwrite=True)
    served = {**base, "PREFECT_API_URL": prefect_api, "TENANT_BACKUP_IDENTITY_BLOCK": "tb-age-identity"}
    serverless = {**base, "PREFECT_HOME": str(tmp_path / "prefect"), "TENANT_BACKUP_IDENTITIES": AGE_SECRET}
    outputs: list[str] = []

    def run(env: dict[str, str], *args: str, ok: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tenant_backup.cli", *args], capture_output=True, text=True, env=env, timeout=180
        )
        outputs.append(f"{done.stdout}\n{done.stderr}")  # not the command line: the test passes the URL
        assert (done.returncode == 0) == ok, done.stderr
        return done.stdout

    tenant = pos_db.tenants[0].id
    run(serverless, "migrate")
    # Through the Prefect API (what it keeps of the runs is searched below), then without it.
    backup_id = json.loads(run(served, "backup", "--tenant", tenant, "--category", "clients", "--force", "--json"))[
        "backup_id"
    ]
    run(served, "restore", backup_id, "--confirm", "RESTORE")
    run(served, "backup", "--tenant", tenant, "--storage", f"s3://{bucket}-missing/x", "--force", ok=False)
    backup_id = json.loads(run(serverless, "backup", "--tenant", tenant, "--category", "clients", "--force", "--json"))[
        "backup_id"
    ]
    run(serverless, "list", "--tenant", tenant)
    run(serverless, "verify", backup_id)
    run(serverless, "restore", backup_id, "--dry-run", "-v")
    run(serverless, "restore", backup_id, "--confirm", "RESTORE", "-v")
    # Failures, each with the secrets set: what they print must not carry them either.
    run(serverless, "backup", "--tenant", "00000000-0000-0000-0000-000000000000", ok=False)
    run(serverless, "restore", backup_id, "--confirm", "yes", ok=False)
    run(serverless, "backup", "--tenant", tenant, "--storage", f"s3://{bucket}-missing/x", "--force", ok=False)
    run(serverless, "list", "--db", url.replace(f":{urlsplit(url).port}/", ":1/"), ok=False)  # nobody listens
    run(serverless, "backup", "--tenant", tenant, "--db", url + "?sslmode=bogus", ok=False)
    other = tmp_path / "other.txt"
    other.write_text(f"{x25519.Identity.generate()}\n")
    run({**serverless, "TENANT_BACKUP_IDENTITIES": ""}, "verify", backup_id, "--identity", str(other), ok=False)
    run({**serverless, "TENANT_BACKUP_IDENTITIES": AGE_SECRET[:-3] + "qqq"}, "verify", backup_id, ok=False)
    run(serverless, "backup", "--tenant", tenant, "--encrypt-to", AGE_SECRET, "--force", ok=False)
    for out in outputs:
        assert not _found(out), out
    # A presigned link names the access key id, as S3 defines it (the id is not secret); never the secret.
    link = run(serverless, "url", backup_id)
    assert KEY_ID in link and not _found(link.replace(KEY_ID, ""))

    with psycopg.connect(pos_db.url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'tenant_backup'")]
        assert {"backups", "backup_restore_logs"} <= set(tables)
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier("tenant_backup", table))
            rows = conn.execute(query).fetchall()
            assert not _found("\n".join(r[0] for r in rows)), table

    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert key.endswith(".zip.age") and not _found(body.decode("latin-1")), key
        with zipfile.ZipFile(io.BytesIO(pyrage.decrypt(body, [IDENTITY]))) as archive:
            text = "\n".join(archive.read(name).decode("utf-8", "replace") for name in archive.namelist())
        assert not _found(text), key

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        logs = client.read_logs(limit=200)
        artifacts = client.read_artifacts(limit=200)
    kept: list[Any] = [
        *(r.model_dump(mode="json") for r in runs),
        *(entry.model_dump(mode="json") for entry in logs),
        *(a.model_dump(mode="json") for a in artifacts),
    ]
    assert runs and logs and artifacts
    assert not _found(json.dumps(kept))
