-- Ledger version 2: backups remember the schedule that made them (its retention applies), and
-- a schedule says which format it writes. Idempotent, like version 1.
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS schedule_id uuid;
CREATE INDEX IF NOT EXISTS idx_backups_schedule ON {schema}.backups (schedule_id);
ALTER TABLE {schema}.backup_schedules ADD COLUMN IF NOT EXISTS format text NOT NULL DEFAULT 'csv'
  CHECK (format IN ('json', 'csv', 'sql'));
