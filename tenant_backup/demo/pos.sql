-- POS schema of seed 000 (Orema N+): the tenant is an etablissement.
CREATE TABLE IF NOT EXISTS etablissements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  nom text NOT NULL,
  adresse text,
  devise text NOT NULL DEFAULT 'XAF',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS utilisateurs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  nom text NOT NULL,
  prenom text,
  email text,
  role text NOT NULL CHECK (role IN ('SUPER_ADMIN', 'ADMIN', 'MANAGER', 'CAISSIER', 'SERVEUR')),
  actif boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS clients (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  nom text NOT NULL,
  telephone text,
  email text,
  adresse text,
  points_fidelite integer NOT NULL DEFAULT 0,
  solde_credit numeric(12,2) NOT NULL DEFAULT 0,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS categories (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  parent_id uuid REFERENCES categories(id),
  nom text NOT NULL,
  couleur text,
  ordre integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS produits (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  categorie_id uuid REFERENCES categories(id),
  nom text NOT NULL,
  description text,
  code_barre text,
  prix_vente numeric(12,2) NOT NULL,
  prix_achat numeric(12,2),
  taux_tva numeric(5,2) NOT NULL DEFAULT 19.25,
  stock_actuel numeric(12,3) NOT NULL DEFAULT 0,
  actif boolean NOT NULL DEFAULT true,
  attributs jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
-- No tenant column: scoped through produits.
CREATE TABLE IF NOT EXISTS supplements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  produit_id uuid NOT NULL REFERENCES produits(id) ON DELETE CASCADE,
  nom text NOT NULL,
  prix numeric(12,2) NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS zones (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  nom text NOT NULL
);
CREATE TABLE IF NOT EXISTS tables (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  zone_id uuid REFERENCES zones(id),
  numero text NOT NULL,
  capacite integer NOT NULL DEFAULT 4,
  statut text NOT NULL DEFAULT 'LIBRE'
);
CREATE TABLE IF NOT EXISTS imprimantes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  nom text NOT NULL,
  type text NOT NULL,
  adresse_ip inet,
  port integer
);
CREATE TABLE IF NOT EXISTS sessions_caisse (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  utilisateur_id uuid NOT NULL REFERENCES utilisateurs(id),
  ouverture timestamptz NOT NULL,
  fermeture timestamptz,
  fond_caisse numeric(12,2) NOT NULL DEFAULT 0,
  total_ventes numeric(14,2),
  statut text NOT NULL DEFAULT 'OUVERTE'
);
CREATE TABLE IF NOT EXISTS ventes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  session_caisse_id uuid NOT NULL REFERENCES sessions_caisse(id),
  utilisateur_id uuid NOT NULL REFERENCES utilisateurs(id),
  client_id uuid REFERENCES clients(id),
  table_id uuid REFERENCES tables(id),
  numero_ticket bigint NOT NULL,
  type_vente text NOT NULL,
  statut text NOT NULL,
  sous_total numeric(14,2) NOT NULL,
  total_tva numeric(14,2) NOT NULL,
  total_ttc numeric(14,2) NOT NULL,
  remise numeric(14,2) NOT NULL DEFAULT 0,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- No tenant column: scoped through ventes.
CREATE TABLE IF NOT EXISTS lignes_vente (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vente_id uuid NOT NULL REFERENCES ventes(id) ON DELETE CASCADE,
  produit_id uuid NOT NULL REFERENCES produits(id),
  quantite numeric(10,3) NOT NULL,
  prix_unitaire numeric(12,2) NOT NULL,
  total numeric(14,2) NOT NULL,
  notes text
);
CREATE TABLE IF NOT EXISTS paiements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  vente_id uuid NOT NULL REFERENCES ventes(id) ON DELETE CASCADE,
  mode_paiement text NOT NULL,
  montant numeric(14,2) NOT NULL,
  reference text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS mouvements_stock (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  produit_id uuid NOT NULL REFERENCES produits(id),
  type text NOT NULL CHECK (type IN ('ENTREE', 'SORTIE', 'AJUSTEMENT')),
  quantite numeric(12,3) NOT NULL,
  motif text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS audit_logs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  etablissement_id uuid NOT NULL REFERENCES etablissements(id) ON DELETE CASCADE,
  utilisateur_id uuid REFERENCES utilisateurs(id),
  action text NOT NULL,
  entite text NOT NULL,
  details jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS utilisateurs_etablissement ON utilisateurs (etablissement_id);
CREATE INDEX IF NOT EXISTS clients_etablissement ON clients (etablissement_id);
CREATE INDEX IF NOT EXISTS produits_etablissement ON produits (etablissement_id);
CREATE INDEX IF NOT EXISTS ventes_etablissement ON ventes (etablissement_id);
CREATE INDEX IF NOT EXISTS lignes_vente_vente ON lignes_vente (vente_id);
CREATE INDEX IF NOT EXISTS paiements_etablissement ON paiements (etablissement_id);
CREATE INDEX IF NOT EXISTS mouvements_stock_etablissement ON mouvements_stock (etablissement_id);
CREATE INDEX IF NOT EXISTS audit_logs_etablissement ON audit_logs (etablissement_id);
