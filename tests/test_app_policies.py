"""The app reads its own ledger, safely (``migrate --app-policies``): through the views, a user of
tenant A sees A's backups and logs and nothing of B's; only an admin of a tenant sees, creates or
changes its schedules. Plain PostgreSQL, requests as PostgREST makes them: ``SET ROLE`` to the API
role and the JWT's claims in ``request.jwt.claims``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import DemoDatabase
from tests.test_encryption import _cli, _json


@pytest.fixture
def api_role(pos_db: DemoDatabase) -> Iterator[str]:
    """A role of the API's (Supabase: authenticated), made for this test: roles belong to the cluster."""
    name = f"tb_api_{uuid.uuid4().hex[:8]}"
    with pos_db.connect() as conn:
        conn.execute(f'CREATE ROLE "{name}" NOLOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"')
    try:
        yield name
    finally:
        with pos_db.connect() as conn:
            conn.execute(f'DROP OWNED BY "{name}"')
            conn.execute(f'DROP ROLE "{name}"')


def _as_user(db: DemoDatabase, role: str, user: str | None, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """``query`` as an API request of ``user`` (None: anonymous) would run it."""
    with psycopg.connect(db.url, autocommit=True) as conn, conn.transaction():
        conn.execute(f'SET LOCAL ROLE "{role}"')
        if user is not None:
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": user}),))
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_a_user_sees_only_their_tenants_backups_and_only_admins_manage_schedules(
    pos_db: DemoDatabase, api_role: str, tmp_path: Path
) -> None:
    a, b = pos_db.tenants[0], pos_db.tenants[1]
    where = ["--db", pos_db.url, "--storage", f"file://{tmp_path}/store", "--json"]
    for tenant in (a, b):
        _json(_cli("backup", "--tenant", tenant.id, "--category", "clients", "--force", *where))
    migrated = _json(_cli("migrate", "--app-policies", "--app-role", api_role, *where[:2], "--json"))
    assert migrated["app_views"] == [
        "public.tenant_backups",
        "public.tenant_backup_logs",
        "public.tenant_backup_schedules",
    ]
    again = _cli("migrate", "--app-policies", "--app-role", api_role, *where[:2])  # idempotent
    assert again.returncode == 0, again.stderr

    seen = _as_user(pos_db, api_role, a.member_id, "SELECT DISTINCT tenant_id FROM public.tenant_backups")
    assert seen == [(a.id,)]
    logs = _as_user(pos_db, api_role, a.member_id, "SELECT DISTINCT tenant_id FROM public.tenant_backup_logs")
    assert logs == [(a.id,)]
    assert _as_user(pos_db, api_role, None, "SELECT count(*) FROM public.tenant_backups") == [(0,)]
    assert _as_user(pos_db, api_role, str(uuid.uuid4()), "SELECT count(*) FROM public.tenant_backups") == [(0,)]
    # The ledger itself, the storage paths and the checksums stay out of reach.
    for query in ("SELECT count(*) FROM tenant_backup.backups", "SELECT storage_path FROM public.tenant_backups"):
        with pytest.raises(psycopg.errors.Error):
            _as_user(pos_db, api_role, a.admin_id, query)

    insert = "INSERT INTO public.tenant_backup_schedules (tenant_id, nom, frequence) VALUES (%s, 'nightly', 'daily')"
    with pytest.raises(psycopg.errors.WithCheckOptionViolation):
        _as_user(pos_db, api_role, a.member_id, insert, a.id)  # a member, not an admin
    with pytest.raises(psycopg.errors.WithCheckOptionViolation):
        _as_user(pos_db, api_role, a.admin_id, insert, b.id)  # an admin, of another tenant
    _as_user(pos_db, api_role, a.admin_id, insert, a.id)
    assert _as_user(pos_db, api_role, a.admin_id, "SELECT tenant_id FROM public.tenant_backup_schedules") == [(a.id,)]
    assert _as_user(pos_db, api_role, a.member_id, "SELECT count(*) FROM public.tenant_backup_schedules") == [(0,)]
    assert _as_user(pos_db, api_role, b.admin_id, "SELECT count(*) FROM public.tenant_backup_schedules") == [(0,)]
    moved = "UPDATE public.tenant_backup_schedules SET tenant_id = %s"
    with pytest.raises(psycopg.errors.WithCheckOptionViolation):
        _as_user(pos_db, api_role, a.admin_id, moved, b.id)  # nor moved to another tenant
    deleted = _as_user(pos_db, api_role, b.admin_id, "DELETE FROM public.tenant_backup_schedules RETURNING id")
    assert deleted == []
    # Only valid schedules (seed 000's rules, the profile's categories), only their settings.
    for bad in (
        "INSERT INTO public.tenant_backup_schedules (tenant_id, nom, frequence, retention_jours) "
        "VALUES (%s, 'x-5', 'daily', -5)",
        "INSERT INTO public.tenant_backup_schedules (tenant_id, nom, frequence) VALUES (%s, 'weekly', 'weekly')",
        "INSERT INTO public.tenant_backup_schedules (tenant_id, nom, frequence, categories) "
        "VALUES (%s, 'nope', 'daily', '[\"nope\"]')",
    ):
        with pytest.raises(psycopg.errors.WithCheckOptionViolation):
            _as_user(pos_db, api_role, a.admin_id, bad, a.id)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_user(pos_db, api_role, a.admin_id, "UPDATE public.tenant_backup_schedules SET derniere_execution = now()")
    fields = _as_user(pos_db, api_role, a.member_id, "SELECT * FROM public.tenant_backups LIMIT 1")
    assert fields and not any("tenant_backup" in str(v) or "sha256" in str(v) for v in fields[0])
    with pos_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tenant_backup.backup_schedules").fetchone() == (1,)
        # A deactivated admin (the profile's active_column, actif) sees and manages nothing.
        conn.execute("UPDATE utilisateurs SET actif = false WHERE id = %s", (a.admin_id,))
    try:
        assert _as_user(pos_db, api_role, a.admin_id, "SELECT count(*) FROM public.tenant_backups") == [(0,)]
        assert _as_user(pos_db, api_role, a.admin_id, "SELECT count(*) FROM public.tenant_backup_schedules") == [(0,)]
        with pytest.raises(psycopg.errors.WithCheckOptionViolation):
            _as_user(pos_db, api_role, a.admin_id, insert, a.id)
    finally:
        with pos_db.connect() as conn:
            conn.execute("UPDATE utilisateurs SET actif = true WHERE id = %s", (a.admin_id,))


def test_app_policies_name_what_is_missing(pos_db: DemoDatabase, tmp_path: Path) -> None:
    where = ["--db", pos_db.url]
    refused = _cli("migrate", "--app-policies", "--app-role", "tb_no_such_role_x", *where)
    assert refused.returncode == 2 and "role tb_no_such_role_x does not exist" in refused.stderr
    refused = _cli("migrate", "--app-policies", "--app-role", "postgres", "--app-schema", "nope_schema", *where)
    assert refused.returncode == 2 and "schema nope_schema does not exist" in refused.stderr
