"""Deterministic demo data for the two seed schemas, generated server-side.

Every id is derived from (tenant, table, row number) with ``md5(...)::uuid``, so the same call
always produces the same rows and foreign keys are computed without lookups. Rows are produced
by ``generate_series`` inside PostgreSQL: loading 3 M rows takes seconds, not minutes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg
from psycopg import sql

SchemaName = Literal["pos", "crm"]

__all__ = ["DemoTenant", "SchemaName", "create_schema", "load_demo", "tenant_uuid"]


@dataclass(frozen=True)
class DemoTenant:
    """One generated tenant: its id, its display name and one admin user."""

    id: str
    name: str
    admin_id: str
    member_id: str
    rows: int


def tenant_uuid(schema: SchemaName, n: int) -> str:
    """The deterministic id of demo tenant ``n`` (0-based) of ``schema``."""
    digest = hashlib.md5(f"{schema}-tenant-{n}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def create_schema(conn: psycopg.Connection, schema: SchemaName) -> None:
    """Create the demo schema's tables (idempotent)."""
    ddl = resources.files(__package__).joinpath(f"{schema}.sql").read_text(encoding="utf-8")
    conn.execute(ddl)  # trusted DDL shipped with the package


def _counts(rows: int) -> dict[str, int]:
    """Split a target row count over the POS tables in realistic proportions."""
    return {
        "utilisateurs": max(4, rows // 2000),
        "clients": max(5, rows // 100),
        "categories": max(4, rows // 20000),
        "produits": max(10, rows // 1000),
        "zones": 3,
        "tables": max(6, rows // 50000),
        "imprimantes": 2,
        "sessions": max(2, rows // 1000),
        "ventes": max(10, rows * 20 // 100),
        "lignes": max(20, rows * 45 // 100),
        "paiements": max(10, rows * 20 // 100),
        "mouvements": max(5, rows * 10 // 100),
        "audit": max(5, rows * 4 // 100),
    }


def _id(table: str, expr: str) -> str:
    """SQL for the deterministic uuid of row ``expr`` of ``table`` of the current tenant."""
    return f"md5(%(t)s || ':{table}:' || ({expr}))::uuid"


_POS = [
    "INSERT INTO etablissements (id, nom, adresse, devise, created_at) VALUES "
    "(%(t)s::uuid, %(name)s, 'Boulevard de la Liberté, BP 123' || E'\\n' || 'Douala', 'XAF', "
    "'2024-01-01T08:00:00Z')",
    # utilisateurs: row 0 is SUPER_ADMIN, row 1 ADMIN, row 2 CAISSIER (a non-admin for tests).
    f"""INSERT INTO utilisateurs (id, etablissement_id, nom, prenom, email, role, actif, created_at)
    SELECT {_id("u", "i")}, %(t)s::uuid, 'Nom ' || i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'Prénom' END,
      'user' || i || '@example.test',
      (ARRAY['SUPER_ADMIN','ADMIN','CAISSIER','SERVEUR','MANAGER'])[1 + least(i, 2 + i % 3)],
      i % 11 <> 5, '2024-01-02T00:00:00Z'::timestamptz + i * interval '1 minute'
    FROM generate_series(0, %(utilisateurs)s - 1) i""",
    f"""INSERT INTO clients (id, etablissement_id, nom, telephone, email, adresse, points_fidelite,
      solde_credit, notes, created_at)
    SELECT {_id("c", "i")}, %(t)s::uuid, 'Client ' || i || CASE WHEN i % 5 = 0 THEN ', "VIP"' ELSE '' END,
      '+237 6' || lpad((i::bigint * 7919 % 100000000)::text, 8, '0'),
      CASE WHEN i % 4 = 0 THEN NULL ELSE 'client' || i || '@example.test' END,
      CASE WHEN i % 3 = 0 THEN 'Rue ' || i || E',\\nQuartier "Akwa"' ELSE NULL END,
      i % 500, round((i % 1000) * 1.25, 2),
      CASE WHEN i % 9 = 0 THEN '' WHEN i % 9 = 1 THEN E'Allergie: arachides;\\tpréfère la terrasse' END,
      '2024-01-03T00:00:00Z'::timestamptz + i * interval '37 seconds'
    FROM generate_series(0, %(clients)s - 1) i""",
    f"""INSERT INTO categories (id, etablissement_id, parent_id, nom, couleur, ordre)
    SELECT {_id("cat", "i")}, %(t)s::uuid, CASE WHEN i >= 3 THEN {_id("cat", "i % 3")} END,
      'Catégorie ' || i, '#' || lpad(to_hex(i::bigint * 4099 % 16777216), 6, '0'), i
    FROM generate_series(0, %(categories)s - 1) i""",
    f"""INSERT INTO produits (id, etablissement_id, categorie_id, nom, description, code_barre,
      prix_vente, prix_achat, taux_tva, stock_actuel, actif, attributs, created_at)
    SELECT {_id("p", "i")}, %(t)s::uuid, {_id("cat", "i % %(categories)s")}, 'Produit ' || i,
      CASE WHEN i % 6 = 0 THEN NULL ELSE 'Plat maison n°' || i || ', servi "chaud"' END,
      lpad((i::bigint * 104729 % 10000000000000)::text, 13, '0'),
      round(500 + (i % 97) * 125.5, 2), CASE WHEN i % 8 = 0 THEN NULL ELSE round(200 + (i % 89) * 60.25, 2) END,
      19.25, round((i % 300) * 1.5, 3), i % 13 <> 0,
      jsonb_build_object('allergenes', jsonb_build_array('gluten', 'lait'), 'epice', i % 4,
        'origine', 'Cameroun'),
      '2024-01-04T00:00:00Z'::timestamptz + i * interval '1 hour'
    FROM generate_series(0, %(produits)s - 1) i""",
    f"""INSERT INTO supplements (id, produit_id, nom, prix)
    SELECT {_id("s", "i")}, {_id("p", "i % %(produits)s")}, 'Supplément ' || i, round((i % 20) * 50.0, 2)
    FROM generate_series(0, %(produits)s - 1) i""",
    f"""INSERT INTO zones (id, etablissement_id, nom)
    SELECT {_id("z", "i")}, %(t)s::uuid, (ARRAY['Salle', 'Terrasse', 'Bar'])[1 + i % 3]
    FROM generate_series(0, %(zones)s - 1) i""",
    f"""INSERT INTO tables (id, etablissement_id, zone_id, numero, capacite, statut)
    SELECT {_id("tb", "i")}, %(t)s::uuid, {_id("z", "i % %(zones)s")}, 'T' || i, 2 + i % 6, 'LIBRE'
    FROM generate_series(0, %(tables)s - 1) i""",
    f"""INSERT INTO imprimantes (id, etablissement_id, nom, type, adresse_ip, port)
    SELECT {_id("im", "i")}, %(t)s::uuid, 'Imprimante ' || i, (ARRAY['TICKET','CUISINE'])[1 + i % 2],
      ('192.168.1.' || (10 + i))::inet, 9100
    FROM generate_series(0, %(imprimantes)s - 1) i""",
    f"""INSERT INTO sessions_caisse (id, etablissement_id, utilisateur_id, ouverture, fermeture,
      fond_caisse, total_ventes, statut)
    SELECT {_id("sc", "i")}, %(t)s::uuid, {_id("u", "i % %(utilisateurs)s")},
      '2024-02-01T07:00:00Z'::timestamptz + i * interval '8 hours',
      CASE WHEN i = %(sessions)s - 1 THEN NULL ELSE '2024-02-01T15:00:00Z'::timestamptz + i * interval '8 hours' END,
      50000, CASE WHEN i = %(sessions)s - 1 THEN NULL ELSE round(100000 + (i % 50) * 1234.5, 2) END,
      CASE WHEN i = %(sessions)s - 1 THEN 'OUVERTE' ELSE 'FERMEE' END
    FROM generate_series(0, %(sessions)s - 1) i""",
    f"""INSERT INTO ventes (id, etablissement_id, session_caisse_id, utilisateur_id, client_id, table_id,
      numero_ticket, type_vente, statut, sous_total, total_tva, total_ttc, remise, notes, created_at)
    SELECT {_id("v", "i")}, %(t)s::uuid, {_id("sc", "i % %(sessions)s")}, {_id("u", "i % %(utilisateurs)s")},
      CASE WHEN i % 3 = 0 THEN {_id("c", "i % %(clients)s")} END,
      CASE WHEN i % 2 = 0 THEN {_id("tb", "i % %(tables)s")} END,
      100000 + i, (ARRAY['SUR_PLACE','A_EMPORTER','LIVRAISON'])[1 + i % 3],
      CASE WHEN i % 50 = 0 THEN 'ANNULEE' ELSE 'PAYEE' END,
      round(1000 + (i % 997) * 10.5, 2), round((1000 + (i % 997) * 10.5) * 0.1925, 2),
      round((1000 + (i % 997) * 10.5) * 1.1925, 2), CASE WHEN i % 10 = 0 THEN 500 ELSE 0 END,
      CASE WHEN i % 20 = 0 THEN E'Sans piment, "bien cuit"\\nmerci' END,
      '2024-02-01T08:00:00Z'::timestamptz + i * interval '17 seconds'
    FROM generate_series(0, %(ventes)s - 1) i""",
    f"""INSERT INTO lignes_vente (id, vente_id, produit_id, quantite, prix_unitaire, total, notes)
    SELECT {_id("lv", "i")}, {_id("v", "i % %(ventes)s")}, {_id("p", "i % %(produits)s")},
      1 + i % 4, round(500 + (i % 97) * 125.5, 2), round((1 + i % 4) * (500 + (i % 97) * 125.5), 2),
      CASE WHEN i % 25 = 0 THEN 'sans oignons, sauce à part' END
    FROM generate_series(0, %(lignes)s - 1) i""",
    f"""INSERT INTO paiements (id, etablissement_id, vente_id, mode_paiement, montant, reference, created_at)
    SELECT {_id("pa", "i")}, %(t)s::uuid, {_id("v", "i % %(ventes)s")},
      (ARRAY['ESPECES','CARTE','MOBILE_MONEY','CREDIT'])[1 + i % 4],
      round((1000 + (i % 997) * 10.5) * 1.1925, 2),
      CASE WHEN i % 4 = 2 THEN 'MM-' || lpad(i::text, 10, '0') END,
      '2024-02-01T08:05:00Z'::timestamptz + i * interval '17 seconds'
    FROM generate_series(0, %(paiements)s - 1) i""",
    f"""INSERT INTO mouvements_stock (id, etablissement_id, produit_id, type, quantite, motif, created_at)
    SELECT {_id("ms", "i")}, %(t)s::uuid, {_id("p", "i % %(produits)s")},
      (ARRAY['ENTREE','SORTIE','AJUSTEMENT'])[1 + i % 3], round(1 + (i % 40) * 0.5, 3),
      CASE WHEN i % 3 = 2 THEN 'Inventaire, écart "casse"' END,
      '2024-02-01T06:00:00Z'::timestamptz + i * interval '41 seconds'
    FROM generate_series(0, %(mouvements)s - 1) i""",
    f"""INSERT INTO audit_logs (etablissement_id, utilisateur_id, action, entite, details, created_at)
    SELECT %(t)s::uuid, CASE WHEN i % 10 <> 0 THEN {_id("u", "i % %(utilisateurs)s")} END,
      (ARRAY['CREATE','UPDATE','DELETE','LOGIN'])[1 + i % 4], 'vente',
      jsonb_build_object('ticket', 100000 + i, 'ip', '10.0.0.' || (i % 250), 'ok', i % 7 <> 0),
      '2024-02-01T08:00:01Z'::timestamptz + i * interval '17 seconds'
    FROM generate_series(0, %(audit)s - 1) i""",
]


def _crm_counts(rows: int) -> dict[str, int]:
    return {
        "profiles": max(3, rows // 1000),
        "leads": max(5, rows * 15 // 100),
        "contacts": max(5, rows * 15 // 100),
        "orders": max(5, rows * 15 // 100),
        "items": max(10, rows * 35 // 100),
        "projects": max(2, rows // 200),
        "ptasks": max(6, rows * 10 // 100),
        "work": max(3, rows * 10 // 100),
    }


_CRM = [
    "INSERT INTO companies (id, name, industry, created_at) VALUES "
    "(%(t)s::uuid, %(name)s, 'Services, \"B2B\"', '2024-01-01T08:00:00Z')",
    # profiles: row 0 admin, row 1 member.
    f"""INSERT INTO profiles (id, company_id, full_name, email, role, created_at)
    SELECT {_id("pr", "i")}, %(t)s::uuid, 'Person ' || i, 'p' || i || '@example.test',
      CASE WHEN i = 0 THEN 'admin' WHEN i % 5 = 2 THEN 'manager' ELSE 'member' END,
      '2024-01-02T00:00:00Z'::timestamptz + i * interval '1 minute'
    FROM generate_series(0, %(profiles)s - 1) i""",
    f"""INSERT INTO leads (id, company_id, name, email, source, status, score, notes, created_at)
    SELECT {_id("l", "i")}, %(t)s::uuid, 'Lead ' || i || CASE WHEN i % 4 = 0 THEN ', Inc.' ELSE '' END,
      CASE WHEN i % 3 = 0 THEN NULL ELSE 'lead' || i || '@example.test' END,
      (ARRAY['web','referral','event'])[1 + i % 3], (ARRAY['new','qualified','lost'])[1 + i % 3],
      CASE WHEN i % 5 = 0 THEN NULL ELSE i % 100 END,
      CASE WHEN i % 7 = 0 THEN E'Called twice;\\n"interested" in plan B' WHEN i % 7 = 1 THEN '' END,
      '2024-01-05T00:00:00Z'::timestamptz + i * interval '23 seconds'
    FROM generate_series(0, %(leads)s - 1) i""",
    f"""INSERT INTO contacts (id, company_id, lead_id, first_name, last_name, email, phone, address, tags,
      created_at)
    SELECT {_id("ct", "i")}, %(t)s::uuid, CASE WHEN i % 2 = 0 THEN {_id("l", "i % %(leads)s")} END,
      'First' || i, CASE WHEN i % 6 = 0 THEN NULL ELSE 'Last, ' || i END, 'c' || i || '@example.test',
      '+33 6 ' || lpad((i::bigint * 7919 % 100000000)::text, 8, '0'),
      CASE WHEN i % 4 = 0 THEN i || E' rue de la Paix\\n75002 Paris' END,
      CASE WHEN i % 3 = 0 THEN ARRAY['vip', 'q"uote'] ELSE ARRAY[]::text[] END,
      '2024-01-06T00:00:00Z'::timestamptz + i * interval '29 seconds'
    FROM generate_series(0, %(contacts)s - 1) i""",
    f"""INSERT INTO orders (id, company_id, contact_id, reference, status, total, currency, ordered_at, metadata)
    SELECT {_id("o", "i")}, %(t)s::uuid, {_id("ct", "i % %(contacts)s")}, 'SO-' || lpad(i::text, 8, '0'),
      (ARRAY['draft','confirmed','shipped'])[1 + i % 3], round((i % 1000) * 19.99, 2), 'EUR',
      CASE WHEN i % 3 = 0 THEN NULL ELSE '2024-03-01T00:00:00Z'::timestamptz + i * interval '31 seconds' END,
      jsonb_build_object('channel', 'web', 'n', i)
    FROM generate_series(0, %(orders)s - 1) i""",
    f"""INSERT INTO order_items (id, order_id, sku, description, quantity, unit_price)
    SELECT {_id("oi", "i")}, {_id("o", "i % %(orders)s")}, 'SKU-' || (i % 500),
      CASE WHEN i % 5 = 0 THEN NULL ELSE 'Item ' || i || ', size "M"' END, 1 + i % 9, round(5 + (i % 300) * 0.75, 2)
    FROM generate_series(0, %(items)s - 1) i""",
    f"""INSERT INTO projects (id, company_id, name, status, budget, starts_on, ends_on)
    SELECT {_id("pj", "i")}, %(t)s::uuid, 'Project ' || i, (ARRAY['active','done'])[1 + i % 2],
      CASE WHEN i % 4 = 0 THEN NULL ELSE round(10000 + i * 99.5, 2) END,
      '2024-01-01'::date + i, CASE WHEN i % 2 = 1 THEN '2024-06-01'::date + i END
    FROM generate_series(0, %(projects)s - 1) i""",
    # Tasks 0..2 of each project are roots; later ones point at an earlier task (a self-reference).
    f"""INSERT INTO project_tasks (id, project_id, parent_task_id, title, done, due_at, estimate)
    SELECT {_id("pt", "i")}, {_id("pj", "i % %(projects)s")},
      CASE WHEN i >= 3 * %(projects)s THEN {_id("pt", "i % (3 * %(projects)s)")} END,
      'Task ' || i, i % 3 = 0, '2024-04-01T12:00:00Z'::timestamptz + i * interval '1 hour',
      CASE WHEN i % 4 = 0 THEN NULL ELSE (i % 40) * interval '30 minutes' END
    FROM generate_series(0, %(ptasks)s - 1) i""",
    f"""INSERT INTO work_orders (id, company_id, project_id, order_id, assigned_to, description, status,
      scheduled_for)
    SELECT {_id("wo", "i")}, %(t)s::uuid, CASE WHEN i % 2 = 0 THEN {_id("pj", "i % %(projects)s")} END,
      CASE WHEN i % 3 = 0 THEN {_id("o", "i % %(orders)s")} END, {_id("pr", "i % %(profiles)s")},
      'Install, then "test"', (ARRAY['open','done'])[1 + i % 2],
      '2024-05-01T09:00:00Z'::timestamptz + i * interval '2 hours'
    FROM generate_series(0, %(work)s - 1) i""",
]


# Distinct names a person tells apart, with the characters that break naive exporters (quotes,
# commas, accents, a dash).
_POS_NAMES = ['Restaurant "Chez Ngo", Douala', "Le Wouri – Bonapriso", "Maquis Étoile, Yaoundé", "Kribi Plage"]
_CRM_NAMES = ['Atlas "Services", Douala', "Bantu Logistique", "Sanaga Solaire – Édéa", "Mont Cameroun Conseil"]


def load_demo(
    conn: psycopg.Connection, schema: SchemaName, tenants: int, rows: int, first_rows: int | None = None
) -> list[DemoTenant]:
    """Create ``schema`` and load ``tenants`` tenants of about ``rows`` rows each.

    ``first_rows`` gives the first tenant another size (the benchmark's one big tenant among
    small ones). Returns the tenants, with one admin and one non-admin user each.
    """
    create_schema(conn, schema)
    statements, counts = (_POS, _counts) if schema == "pos" else (_CRM, _crm_counts)
    user_table = "u" if schema == "pos" else "pr"
    out: list[DemoTenant] = []
    for n in range(tenants):
        tenant_rows = first_rows if (n == 0 and first_rows is not None) else rows
        tid = tenant_uuid(schema, n)
        names = _POS_NAMES if schema == "pos" else _CRM_NAMES
        name = names[n] if n < len(names) else f"{names[n % len(names)]} {n // len(names) + 1}"
        params: dict[str, object] = {"t": tid, "name": name, **counts(tenant_rows)}
        with conn.transaction():
            for stmt in statements:
                # " % " is the modulo operator in these statements; psycopg wants it doubled.
                conn.execute(sql.SQL(stmt.replace(" % ", " %% ")), params)
        admin, member = conn.execute(
            sql.SQL(
                "SELECT md5(%(t)s || ':' || %(u)s || ':0')::uuid::text, md5(%(t)s || ':' || %(u)s || ':2')::uuid::text"
            ),
            {"t": tid, "u": user_table},
        ).fetchone() or ("", "")
        out.append(DemoTenant(id=tid, name=name, admin_id=admin, member_id=member, rows=tenant_rows))
    conn.execute("ANALYZE")
    return out
