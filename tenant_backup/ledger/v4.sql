-- Ledger version 4: an encrypted backup records the age recipients (public keys) it was encrypted
-- to; its checksum is the sha256 of the stored (encrypted) bytes. NULL: not encrypted. Idempotent.
ALTER TABLE {schema}.backups ADD COLUMN IF NOT EXISTS encrypted_to text[];
COMMENT ON COLUMN {schema}.backups.encrypted_to IS
  'age recipients (public keys) the artifact is encrypted to; NULL when it is not encrypted';
