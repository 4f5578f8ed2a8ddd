-- Ledger version 5: per-tenant keys (crypto-erasure). A tenant's backups can be encrypted to its
-- own age key; the key's private half is kept here only age-encrypted (armored) to the operator's
-- recipients (wrapped_to). Erasing the tenant destroys it (wrapped_identity NULL, destroyed_at set):
-- every copy of those backups, wherever it survives, is unreadable from then on. The row stays as
-- the record of the erasure, and refuses new backups of the tenant id. Idempotent.
CREATE TABLE IF NOT EXISTS {schema}.tenant_keys (
  tenant_id text PRIMARY KEY,
  recipient text,
  wrapped_identity text,
  wrapped_to text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  destroyed_at timestamptz,
  destroyed_by uuid,
  CHECK ((destroyed_at IS NULL) = (wrapped_identity IS NOT NULL))
);
REVOKE ALL ON {schema}.tenant_keys FROM PUBLIC;
COMMENT ON TABLE {schema}.tenant_keys IS
  'per-tenant age keys, wrapped to the operator''s recipients; destroyed by erase-tenant (crypto-erasure)';
