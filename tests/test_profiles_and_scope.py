"""Profiles, tenant scope from the catalog, and the SQL it turns into."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenant_backup.db import check_session_capable
from tenant_backup.errors import ConfigurationError, PoolerNotSupportedError, ScopeError, UnknownCategoryError
from tenant_backup.tenancy.catalog import read_catalog
from tenant_backup.tenancy.filters import select_tenant_rows
from tenant_backup.tenancy.profiles import discovered_profile, load_profile, shipped_profiles
from tenant_backup.tenancy.scope import plan_scope
from tests.conftest import DemoDatabase


def test_shipped_profiles_are_the_two_seeds() -> None:
    assert shipped_profiles() == ["crm", "pos"]
    pos = load_profile("pos")
    assert pos.tenant_column == "etablissement_id"
    assert pos.categories["ventes"] == ("ventes", "lignes_vente", "paiements", "sessions_caisse")
    assert pos.admin is not None and pos.admin.roles == ("SUPER_ADMIN", "ADMIN")
    assert load_profile("crm").tenant_column == "company_id"


def test_profile_loads_from_toml_and_yaml_files(tmp_path: Path) -> None:
    toml = tmp_path / "app.toml"
    toml.write_text('name = "app"\ntenant_column = "org_id"\n[categories]\nall = ["a", "b"]\n')
    yaml = tmp_path / "app.yaml"
    yaml.write_text("name: app\ntenant_column: org_id\ncategories:\n  all: [a, b]\n")
    assert load_profile(str(toml)) == load_profile(str(yaml))
    assert load_profile(str(toml)).tables_for(None) == ["a", "b"]


def test_invalid_profile_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')  # no tenant_column
    with pytest.raises(ConfigurationError, match="tenant_column"):
        load_profile(str(bad))
    with pytest.raises(ConfigurationError, match="use one of crm, pos"):
        load_profile("nope")


def test_unknown_category_names_the_known_ones() -> None:
    with pytest.raises(UnknownCategoryError, match="'factures'.*choose among: ventes, clients"):
        load_profile("pos").tables_for(["ventes", "factures"])


def test_tables_for_categories_keeps_profile_order_without_repeats() -> None:
    pos = load_profile("pos")
    assert pos.tables_for(["clients", "ventes", "clients"]) == [
        "clients",
        "ventes",
        "lignes_vente",
        "paiements",
        "sessions_caisse",
    ]
    assert pos.is_full(None) and not pos.is_full(["clients"])


def test_transaction_pooler_port_is_refused_with_the_session_pooler_named() -> None:
    with pytest.raises(PoolerNotSupportedError, match="session pooler"):
        check_session_capable("postgresql://postgres.x:pw@aws-0-eu.pooler.supabase.com:6543/postgres")
    check_session_capable("postgresql://postgres.x:pw@aws-0-eu.pooler.supabase.com:5432/postgres")


def test_discovery_scopes_tables_without_tenant_column_through_foreign_keys(pos_db: DemoDatabase) -> None:
    with pos_db.connect() as conn:
        catalog = read_catalog(conn, "public")
    scopes = {s.table: s for s in plan_scope(catalog, discovered_profile("etablissement_id"), None)}
    assert set(scopes) == {
        "etablissements",
        "utilisateurs",
        "clients",
        "categories",
        "produits",
        "supplements",
        "zones",
        "tables",
        "imprimantes",
        "sessions_caisse",
        "ventes",
        "lignes_vente",
        "paiements",
        "mouvements_stock",
        "audit_logs",
    }
    assert scopes["supplements"].describe() == "supplements.produit_id -> produits.etablissement_id"
    assert scopes["lignes_vente"].describe() == "lignes_vente.vente_id -> ventes.etablissement_id"
    assert scopes["etablissements"].describe() == "etablissements.id"  # the tenant table, by its key
    assert scopes["ventes"].path == ()


def test_fk_path_query_selects_exactly_the_tenants_rows(pos_db: DemoDatabase) -> None:
    tenant, other = pos_db.tenants[0].id, pos_db.tenants[1].id
    with pos_db.connect() as conn:
        scope = {
            s.table: s for s in plan_scope(read_catalog(conn, "public"), discovered_profile("etablissement_id"), None)
        }["lignes_vente"]
        query = select_tenant_rows(scope)
        assert query.as_string(conn) == (
            'SELECT "id", "vente_id", "produit_id", "quantite", "prix_unitaire", "total", "notes" '
            'FROM "public"."lignes_vente" WHERE "vente_id" IN (SELECT "id" FROM "public"."ventes" '
            'WHERE "etablissement_id" = %(tenant)s)'
        )
        ours = {r[0] for r in conn.execute(query, {"tenant": tenant})}
        expected = {
            r[0]
            for r in conn.execute(
                "SELECT l.id FROM lignes_vente l JOIN ventes v ON v.id = l.vente_id WHERE v.etablissement_id = %s",
                (tenant,),
            )
        }
        theirs = {r[0] for r in conn.execute(query, {"tenant": other})}
    assert ours == expected and len(ours) > 0
    assert not ours & theirs


def test_self_referencing_and_composite_paths_in_crm(crm_db: DemoDatabase) -> None:
    with crm_db.connect() as conn:
        scopes = {
            s.table: s
            for s in plan_scope(read_catalog(conn, "public"), load_profile("crm"), load_profile("crm").tables_for(None))
        }
    # project_tasks references itself and projects: the self-reference is never a path.
    assert scopes["project_tasks"].describe() == "project_tasks.project_id -> projects.company_id"
    assert scopes["order_items"].describe() == "order_items.order_id -> orders.company_id"
    assert scopes["companies"].describe() == "companies.id"


def test_profile_table_missing_from_schema_is_an_error(crm_db: DemoDatabase) -> None:
    with crm_db.connect() as conn:
        catalog = read_catalog(conn, "public")
    with pytest.raises(UnknownCategoryError, match="ventes"):
        plan_scope(catalog, load_profile("crm"), ["ventes"])


def test_table_with_no_path_to_a_tenant_is_refused_when_named(database: DemoDatabase) -> None:
    with database.connect() as conn:
        conn.execute("CREATE TABLE devises (code text PRIMARY KEY)")
        conn.execute("CREATE TABLE shops (id int PRIMARY KEY, org_id int NOT NULL)")
        catalog = read_catalog(conn, "public")
    profile = discovered_profile("org_id")
    assert [s.table for s in plan_scope(catalog, profile, None)] == ["shops"]  # shared tables left out
    with pytest.raises(ScopeError, match="'devises' has no column 'org_id'"):
        plan_scope(catalog, profile, ["devises"])
