-- The ledger of tenant-backup. {schema} is replaced by the quoted ledger schema.
-- Idempotent: every statement can run again on an up-to-date database.
CREATE SCHEMA IF NOT EXISTS {schema};

-- Seed 000's backups table, with seed 001's backup_type, tables_backed_up, started_at and
-- metadata. tenant_id replaces etablissement_id / company_id (the column name is in
-- tenant_column) and has no foreign key: the record of a backup must outlive its tenant.
CREATE TABLE IF NOT EXISTS {schema}.backups (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id text NOT NULL,
  tenant_column text NOT NULL,
  nom text NOT NULL,
  description text,
  type text NOT NULL CHECK (type IN ('full', 'partial', 'incremental')),
  format text NOT NULL CHECK (format IN ('json', 'csv', 'sql')),
  categories jsonb NOT NULL DEFAULT '[]',
  storage_path text,
  file_size bigint,
  record_count bigint,
  checksum text,
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
  error_message text,
  created_by uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz,
  backup_type text NOT NULL DEFAULT 'manual' CHECK (backup_type IN ('manual', 'scheduled')),
  tables_backed_up text[],
  started_at timestamptz,
  metadata jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS idx_backups_tenant ON {schema}.backups (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_backups_created_at ON {schema}.backups (created_at DESC);

-- Seed 000's backup_schedules.
CREATE TABLE IF NOT EXISTS {schema}.backup_schedules (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id text NOT NULL,
  nom text NOT NULL,
  actif boolean NOT NULL DEFAULT true,
  frequence text NOT NULL CHECK (frequence IN ('daily', 'weekly', 'monthly')),
  heure_execution time NOT NULL DEFAULT '02:00',
  jour_semaine integer,
  jour_mois integer,
  type text NOT NULL DEFAULT 'full',
  categories jsonb NOT NULL DEFAULT '[]',
  retention_jours integer NOT NULL DEFAULT 30,
  derniere_execution timestamptz,
  prochaine_execution timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_backup_schedules_tenant ON {schema}.backup_schedules (tenant_id);

-- Seed 001's backup_restore_logs: one row per action (backup, restore, ...) and its result.
CREATE TABLE IF NOT EXISTS {schema}.backup_restore_logs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  backup_id uuid REFERENCES {schema}.backups(id) ON DELETE SET NULL,
  tenant_id text,
  performed_by uuid,
  performed_by_name text,
  action text NOT NULL,
  result text NOT NULL CHECK (result IN ('success', 'failed')),
  error_message text,
  details jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_backup_restore_logs_tenant ON {schema}.backup_restore_logs (tenant_id, created_at DESC);
