-- Ledger version 3: a restore writes its backup_restore_logs row as 'running' before it applies,
-- and sets the result when it commits or fails; a run that died leaves 'running', which the
-- tenant's next backup or restore reaps to 'failed'. Idempotent, like versions 1 and 2.
ALTER TABLE {schema}.backup_restore_logs DROP CONSTRAINT IF EXISTS backup_restore_logs_result_check;
ALTER TABLE {schema}.backup_restore_logs ADD CONSTRAINT backup_restore_logs_result_check
  CHECK (result IN ('running', 'success', 'failed'));
