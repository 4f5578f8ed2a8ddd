"""Fidelity of every artifact format: backup → wipe → restore gives back the same COPY output.

Each demo schema gets a table holding every type we support, with the values that break naive
exporters (NaN and ±Infinity, NULL next to '' and 'NULL' and ``\\N``, newlines, tabs, quotes,
backslashes, non-ASCII, infinite dates, empty ranges, arrays with NULL elements, json whose
spacing and duplicate keys must survive, a jsonb JSON ``null`` next to SQL NULL, bytea),
a generated column and an identity column. The tenant is found by discovery, so the table is
backed up along with the whole demo schema.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.backup import backup_tenant
from flows.restore import restore_backup
from tenant_backup.errors import ConfigurationError, UnsupportedTypeError, VerificationError
from tenant_backup.storage import Storage
from tenant_backup.tenancy.catalog import read_catalog
from tenant_backup.tenancy.filters import qualified, tenant_filter
from tenant_backup.tenancy.fk_order import restore_order
from tenant_backup.tenancy.profiles import discovered_profile
from tenant_backup.tenancy.scope import plan_scope
from tests.conftest import DemoDatabase
from tests.helpers import state_of

pytestmark = pytest.mark.usefixtures("prefect_api")

TENANT_COLUMN = {"pos": "etablissement_id", "crm": "company_id"}
TENANT_TABLE = {"pos": "etablissements", "crm": "companies"}

ALL_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'très "happy"');
CREATE TABLE all_types (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  {tenant} uuid NOT NULL REFERENCES {tenant_table} (id),
  u uuid, i integer, b bigint, s smallint, n numeric(14,4), n_free numeric, r real, d double precision,
  flag boolean, t text, vc varchar(20), ch char(3), dt date, tm time, tmtz timetz, ts timestamp,
  tstz timestamptz, iv interval, ir int4range, nr numrange, tsr tstzrange, dr daterange,
  ip inet, net cidr, mac macaddr, mo mood, ia integer[], ta text[], na numeric[], ma integer[],
  j json, jb jsonb, bin bytea,
  doubled numeric GENERATED ALWAYS AS (n * 2) STORED
);
"""

ROWS = [
    {},  # every nullable column NULL
    {
        "u": "00000000-0000-0000-0000-000000000001",
        "i": -2147483648,
        "b": 9223372036854775807,
        "s": 32767,
        "n": "1234567890.1234",
        "n_free": "-0.000000000000000000000000000001",
        "r": "NaN",
        "d": "Infinity",
        "flag": True,
        "t": 'line1\nline2\ttab "quote" back\\slash \\N NULL \r\n é漢字🙂',
        "vc": "",
        "ch": "ab",
        "dt": "infinity",
        "tm": "24:00:00",
        "tmtz": "12:00:00.123456+05:30",
        "ts": "294276-12-31 23:59:59.999999",
        "tstz": "-infinity",
        "iv": "1 year 2 mons 3 days 04:05:06.789",
        "ir": "empty",
        "nr": "[1.50,2.5]",
        "tsr": "[2026-01-01 00:00:00+00,infinity)",
        "dr": "(,)",
        "ip": "::1/128",
        "net": "10.0.0.0/8",
        "mac": "08:00:2b:01:02:03",
        "mo": 'très "happy"',
        "ia": "{1,NULL,3}",
        "ta": '{"a,b","NULL",NULL,"\\"",""," x "}',
        "na": "{1.10,NaN,NULL}",
        "ma": "{{1,2},{3,4}}",
        "j": '{ "a" : 1,  "a": [1.0, 2e3] }',
        "jb": "null",
        "bin": b"\x00\xff\\\n",
    },
    {
        "t": "NULL",
        "vc": "\\N",
        "r": "-Infinity",
        "d": "-0",
        "n_free": "NaN",
        "dt": "4713-01-01 BC",
        "iv": "-1 days +02:00:00",
        "j": "null",
        "jb": '{"k": [1, 2.50, null, "x\\ny", {"deep": true}], "big": 123456789012345678901234567890.5}',
        "ta": "{}",
        "bin": b"",
        "ts": "2000-01-01 00:00:00",
    },
    {"r": "3.4028235e+38", "d": "1.7976931348623157e+308", "t": "\\", "jb": '"str"', "n": "0.0001"},
    {"r": "1e-45", "d": "5e-324", "t": " ", "vc": "'NULL'", "n": "-9999999999.9999"},
]


def _add_all_types(db: DemoDatabase) -> None:
    with db.connect() as conn:
        conn.execute(ALL_TYPES.format(tenant=TENANT_COLUMN[db.schema], tenant_table=TENANT_TABLE[db.schema]))
        for tenant in db.tenants[:2]:
            for row in ROWS:
                values = {TENANT_COLUMN[db.schema]: tenant.id, **row}
                conn.execute(
                    sql.SQL("INSERT INTO all_types ({}) VALUES ({})").format(
                        sql.SQL(", ").join(map(sql.Identifier, values)),
                        sql.SQL(", ").join(sql.Placeholder() * len(values)),
                    ),
                    list(values.values()),
                )


@pytest.fixture(scope="module")
def typed_pos(pos_db: DemoDatabase) -> DemoDatabase:
    _add_all_types(pos_db)
    return pos_db


@pytest.fixture(scope="module")
def typed_crm(crm_db: DemoDatabase) -> DemoDatabase:
    _add_all_types(crm_db)
    return crm_db


def _wipe(db: DemoDatabase, tenant: str) -> None:
    """Delete every row of the tenant in every discovered table, the tenant's own row included."""
    profile = discovered_profile(TENANT_COLUMN[db.schema])
    with db.connect() as conn, conn.transaction():
        catalog = read_catalog(conn, profile.db_schema)
        scopes = {s.table: s for s in plan_scope(catalog, profile, None)}
        for table in reversed(restore_order(sorted(scopes), catalog.foreign_keys).tables):
            scope = scopes[table]
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {}").format(qualified(scope.schema_name, table), tenant_filter(scope)),
                {"tenant": tenant},
            )
    assert state_of(db.url, profile, tenant)["all_types"] == b""


def _backup(db: DemoDatabase, tenant: str, fmt: str, compression: str = "deflate") -> Any:
    return backup_tenant(
        tenant_id=tenant,
        profile=None,
        tenant_column=TENANT_COLUMN[db.schema],
        format=fmt,  # type: ignore[arg-type]
        compression=compression,  # type: ignore[arg-type]
        force=True,
    )


@pytest.mark.parametrize("fmt", ["csv", "json", "sql"])
@pytest.mark.parametrize("schema", ["pos", "crm"])
def test_every_format_restores_every_type_exactly(
    schema: str, fmt: str, request: pytest.FixtureRequest, env: Any
) -> None:
    db: DemoDatabase = request.getfixturevalue(f"typed_{schema}")
    env["use"](db)
    tenant = db.tenants[0].id
    profile = discovered_profile(TENANT_COLUMN[schema])
    before = state_of(db.url, profile, tenant)
    others = state_of(db.url, profile, db.tenants[1].id)
    assert before["all_types"].count(b"\n") == len(ROWS)
    result = _backup(db, tenant, fmt)
    assert result.tables["all_types"] == len(ROWS)
    _wipe(db, tenant)
    restore_backup(backup_id=result.backup_id, confirm="RESTORE")
    assert state_of(db.url, profile, tenant) == before
    assert state_of(db.url, profile, db.tenants[1].id) == others


def _script(store: str, storage_path: str, compression: str, folder: Path) -> Path:
    """The SQL artifact, decompressed into a file that psql reads."""
    storage = Storage(store)
    raw = storage.open_read(storage.key_of(storage_path)).read()
    if compression == "deflate":
        raw = gzip.decompress(raw)
    elif compression == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
    script = folder / "backup.sql"
    script.write_bytes(raw)
    return script


def _psql(db: DemoDatabase, script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "--single-transaction", "-f", str(script), db.url], capture_output=True, text=True
    )


@pytest.mark.parametrize("compression", ["deflate", "zstd", "none"])
def test_psql_single_transaction_replays_the_sql_artifact(
    typed_pos: DemoDatabase, compression: str, env: Any, tmp_path: Path
) -> None:
    db = typed_pos
    env["use"](db)
    store = env["store"]
    tenant = db.tenants[2].id
    profile = discovered_profile("etablissement_id")
    before = state_of(db.url, profile, tenant)
    result = _backup(db, tenant, "sql", compression)
    suffix = {"deflate": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}[compression]
    assert result.storage_path.endswith(suffix)
    script = _script(store, result.storage_path, compression, tmp_path)
    _wipe(db, tenant)
    wiped = state_of(db.url, profile, tenant)

    # Without one transaction the script refuses before writing anything.
    alone = subprocess.run(["psql", "-X", "-q", "-f", str(script), db.url], capture_output=True, text=True)
    assert alone.returncode != 0
    assert "--single-transaction" in alone.stderr
    assert state_of(db.url, profile, tenant) == wiped

    done = _psql(db, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""  # psql -q prints nothing: no stray result set
    assert state_of(db.url, profile, tenant) == before
    # Sequences moved past the restored ids: the app can insert again.
    with db.connect() as conn:
        conn.execute("INSERT INTO all_types (etablissement_id) VALUES (%s)", (tenant,))
        conn.execute(
            "DELETE FROM all_types WHERE etablissement_id = %s AND t IS NULL AND i IS NULL AND id > 100", (tenant,)
        )


def test_a_partial_sql_artifact_replays_only_the_difference_and_never_reaches_outside_tables(
    typed_pos: DemoDatabase, env: Any, tmp_path: Path
) -> None:
    db = typed_pos
    env["use"](db)
    tenant = db.tenants[1].id
    result = backup_tenant(tenant_id=tenant, profile="pos", categories=["produits"], format="sql", force=True)
    backed_up = state_of(db.url, "pos", tenant)
    script = _script(env["store"], result.storage_path, "deflate", tmp_path)
    with db.connect() as conn:  # the app changes a price: the replay puts it back, and touches nothing else
        conn.execute("UPDATE produits SET prix_vente = prix_vente + 1 WHERE etablissement_id = %s", (tenant,))
    done = _psql(db, script)
    assert done.returncode == 0, done.stderr
    assert state_of(db.url, "pos", tenant) == backed_up  # supplements and sale lines kept (no cascade)

    with db.connect() as conn:  # a product made after the backup, already sold once
        sale_line = conn.execute(
            "SELECT l.vente_id FROM lignes_vente l JOIN ventes v ON v.id = l.vente_id "
            "WHERE v.etablissement_id = %s LIMIT 1",
            (tenant,),
        ).fetchone()
        assert sale_line is not None
        new = conn.execute(
            "INSERT INTO produits (etablissement_id, nom, prix_vente) VALUES (%s, 'new', 1) RETURNING id", (tenant,)
        ).fetchone()
        assert new is not None
        conn.execute(
            "INSERT INTO lignes_vente (vente_id, produit_id, quantite, prix_unitaire, total) VALUES (%s, %s, 1, 1, 1)",
            (sale_line[0], new[0]),
        )
    changed = state_of(db.url, "pos", tenant)
    refused = _psql(db, script)
    assert refused.returncode != 0
    assert "tenant-backup: 1 row(s) of table lignes_vente reference rows of produits" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert state_of(db.url, "pos", tenant) == changed


def test_a_type_without_an_exact_text_form_is_refused_at_backup_time(database: Any, env: Any) -> None:
    with database.connect() as conn:
        conn.execute("CREATE TABLE shops (id text PRIMARY KEY)")
        conn.execute("CREATE TABLE tills (id int PRIMARY KEY, shop_id text REFERENCES shops, price money)")
        conn.execute("INSERT INTO shops VALUES ('s1')")
    env["use"](database)
    with pytest.raises(UnsupportedTypeError, match=r"tills\.price has type money.*numeric"):
        backup_tenant(tenant_id="s1", profile=None, tenant_column="shop_id")
    with psycopg.connect(database.url) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_backup.backups").fetchone() == (0,)


def test_zstd_is_refused_for_the_spreadsheet_zip(typed_pos: DemoDatabase, env: Any) -> None:
    env["use"](typed_pos)
    with pytest.raises(ConfigurationError, match="spreadsheets"):
        _backup(typed_pos, typed_pos.tenants[0].id, "csv", "zstd")


def test_open_backup_gives_the_same_typed_frames_for_every_format(
    typed_crm: DemoDatabase, env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import math
    from decimal import Decimal

    import pandas as pd

    from tenant_backup.artifact.dataframes import open_backup
    from tenant_backup.cli import main

    db = typed_crm
    env["use"](db)
    tenant = db.tenants[1].id
    frames = {}
    for fmt, compression in (("csv", "deflate"), ("json", "zstd"), ("sql", "none")):
        result = _backup(db, tenant, fmt, compression)
        backup = open_backup(result.storage_path, checksum=result.checksum)
        assert backup.tables == result.tables
        with pytest.raises(VerificationError, match="ledger's checksum"):
            open_backup(result.storage_path, checksum="sha256:" + "0" * 64)
        frames[fmt] = backup.table("all_types").sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(frames["csv"], frames["json"])
    pd.testing.assert_frame_equal(frames["csv"], frames["sql"])

    f = frames["csv"]
    assert str(f["i"].dtype) == "Int32" and str(f["b"].dtype) == "Int64" and str(f["d"].dtype) == "Float64"
    assert str(f["flag"].dtype) == "boolean" and str(f["t"].dtype) == "string"
    assert str(f["tstz"].dtype) == "string"  # holds -infinity: kept as text, not altered
    assert str(f["ts"].dtype) == "string"  # year 294276 does not fit pandas' datetime64
    assert f["t"].isna()[0] and f["vc"][1] == "" and f["vc"][2] == "\\N" and f["t"][2] == "NULL"
    assert math.isnan(f["r"][1]) and f["d"][1] == math.inf and f["b"][1] == 9223372036854775807
    assert f["n"][1] == Decimal("1234567890.1234") and f["n_free"][2].is_nan()
    assert f["bin"][1] == b"\x00\xff\\\n" and f["jb"][2]["k"][3] == "x\ny" and f["jb"][1] is None

    assert main(["show", result.backup_id, "--table", "all_types", "--head", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["rows"]) == 2 and shown["dtypes"]["i"] == "Int32"


def test_a_table_that_differs_from_its_manifest_fails_as_it_is_read_even_when_the_file_is_the_recorded_one(
    typed_crm: DemoDatabase, env: Any, tmp_path: Path
) -> None:
    """A CSV ZIP whose whole sha256 matched the ledger's is opened at once (its manifest read, its
    tables checked as they are read); a table that does not match the manifest still fails, and
    without a checksum every table is checked before the backup opens."""
    import hashlib
    import zipfile

    from tenant_backup.artifact.dataframes import open_backup

    env["use"](typed_crm)
    result = _backup(typed_crm, typed_crm.tenants[1].id, "csv")
    source = Path(result.storage_path.removeprefix("file://"))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(bad, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.startswith("all_types"):
                data = data.replace(b"NULL", b"null", 1)  # a value changed, the manifest not
                assert data != old.read(item)
            new.writestr(item, data)
    checksum = "sha256:" + hashlib.sha256(bad.read_bytes()).hexdigest()
    opened = open_backup(bad, checksum=checksum)
    assert opened.tables == result.tables
    with pytest.raises(VerificationError, match="table all_types of backup .* does not match its sha256"):
        opened.table("all_types")
    with pytest.raises(VerificationError, match="table all_types of backup .* does not match its sha256"):
        open_backup(bad)
