-- Ledger version 6: a backup remembers its last verification (verify, the verify-backups
-- deployment): when, the verdict, and why it failed. Idempotent.
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS verified_at timestamptz;
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS verification text
  CHECK (verification IN ('passed', 'failed'));
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS verification_error text;
