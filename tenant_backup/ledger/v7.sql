-- Ledger version 7: incremental backups. A backup's parent (the backup it holds the changes
-- since; NULL for a full one): a chain goes as a whole, so a parent cannot be deleted while a
-- backup still needs it. Each backup that can be a parent keeps, per table, the digests of its
-- tenant's keys by bucket, which the next incremental compares with to find deleted rows.
-- Idempotent.
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS parent_id uuid REFERENCES {schema}.backups (id);
CREATE INDEX IF NOT EXISTS backups_parent_id_idx ON {schema}.backups (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS {schema}.backup_key_digests (
  backup_id uuid NOT NULL REFERENCES {schema}.backups (id) ON DELETE CASCADE,
  table_name text NOT NULL,
  buckets integer NOT NULL CHECK (buckets > 0),
  digests bytea NOT NULL,
  PRIMARY KEY (backup_id, table_name)
);
