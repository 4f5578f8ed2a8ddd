"""The one exception tree of tenant-backup.

::

    TenantBackupError                 every error this package raises on purpose
    ├── ConfigurationError            bad input: fix the call, the profile or the settings
    │   ├── UnknownCategoryError      a category or table that the profile or schema lacks
    │   ├── ScopeError                a table that cannot be tied to a tenant
    │   ├── UnsupportedTypeError      a column type no artifact can carry exactly
    │   ├── PoolerNotSupportedError   a transaction pooler, where a session is needed
    │   ├── RoleAccessError           the database role lacks a privilege, or row-level security applies
    │   └── EncryptionKeyError        an encrypted backup, and no identity at hand opens it
    ├── PermissionDeniedError         the requester is not an admin of the tenant
    ├── ThrottledError                a backup of the tenant ran less than the throttle window ago
    ├── TenantBusyError               another backup or restore of the tenant holds its lock
    ├── DatabaseBusyError             every backup slot of the database stayed taken past slot_timeout
    ├── SnapshotError                 the shared snapshot could not be taken or imported
    ├── ExtractError                  COPY of one table failed
    ├── StorageError                  the object store refused or could not be reached
    ├── LedgerError                   the ledger row is missing or in the wrong state
    ├── VerificationError             an artifact failed its checksum, version or table hashes
    ├── RestoreRefusedError           a restore that would be wrong: unconfirmed, other tenant, drift
    ├── ApprovalRejectedError         the human approver said no, or did not answer in time
    ├── RestoreFailedError            the database refused the restore mid-apply (rolled back)
    └── RestoreCheckError             the restored rows do not equal the backup's (rolled back)

Every error carries ``tenant_id``, ``backup_id`` and ``table`` when they are known, says what
failed and what to do next, and survives pickling (Prefect may carry it across processes).

``exit_code`` is the command line's exit status for it: 2 refused before anything was written
(bad input, configuration, permissions, a damaged artifact, busy), 3 failed while working
(extraction, storage, the database mid-restore, the check before commit: rolled back or marked
failed), 4 an approval that was refused or not given (nothing changed).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApprovalRejectedError",
    "ConfigurationError",
    "DatabaseBusyError",
    "EncryptionKeyError",
    "ExtractError",
    "LedgerError",
    "PermissionDeniedError",
    "PoolerNotSupportedError",
    "RestoreCheckError",
    "RestoreFailedError",
    "RestoreRefusedError",
    "RoleAccessError",
    "ScopeError",
    "SnapshotError",
    "StorageError",
    "TenantBackupError",
    "TenantBusyError",
    "TenantsFailedError",
    "ThrottledError",
    "UnknownCategoryError",
    "UnsupportedTypeError",
    "VerificationError",
]


class TenantBackupError(Exception):
    """Base of every error raised on purpose by tenant-backup."""

    transient = False  # True where the same call may succeed later (retries look at this)
    exit_code = 2  # the CLI's exit status (see the module docstring)

    def __init__(
        self,
        message: str,
        *,
        tenant_id: str | None = None,
        backup_id: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tenant_id = tenant_id
        self.backup_id = backup_id
        self.table = table

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes are not restored by the default Exception pickling.
        return (
            _rebuild,
            (type(self), self.message, self.tenant_id, self.backup_id, self.table),
        )

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: type[TenantBackupError],
    message: str,
    tenant_id: str | None,
    backup_id: str | None,
    table: str | None,
) -> TenantBackupError:
    return cls(message, tenant_id=tenant_id, backup_id=backup_id, table=table)


class ConfigurationError(TenantBackupError):
    """Raised when the call, the profile or the settings are wrong; nothing was written."""


class UnknownCategoryError(ConfigurationError):
    """Raised when a requested category or table is not in the profile or the schema."""


class ScopeError(ConfigurationError):
    """Raised when a table has neither the tenant column nor a foreign-key path to one."""


class UnsupportedTypeError(ConfigurationError):
    """A column whose text form would not read back as the same value elsewhere."""


class PoolerNotSupportedError(ConfigurationError):
    """Raised when the database URL points at a transaction pooler (Supabase port 6543)."""


class RoleAccessError(ConfigurationError):
    """Raised when the database role may not read or write what the step needs: a missing
    privilege, or row-level security that would hide rows from it (checked before any write)."""


class EncryptionKeyError(ConfigurationError):
    """Raised when a backup is encrypted and no identity at hand decrypts it (none given, or none
    of its recipients'); nothing was written."""


class PermissionDeniedError(TenantBackupError):
    """Raised when ``requested_by`` is not an admin of the tenant under the profile's rule."""


class ThrottledError(TenantBackupError):
    """Raised when the tenant was backed up less than the throttle window ago."""


class TenantsFailedError(TenantBackupError):
    """A run of many tenants in which some failed (each one's reason is in its outcome); the
    others' backups stand. ``output`` is what ``--json`` prints all the same."""

    exit_code = 3

    def __init__(self, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.output = output


class TenantBusyError(TenantBackupError):
    """Raised when another backup or restore of the tenant holds its lock past lock_timeout."""

    transient = True


class DatabaseBusyError(TenantBackupError):
    """Raised when no backup slot of the database came free within slot_timeout; nothing was written."""

    transient = True


class SnapshotError(TenantBackupError):
    """Raised when the shared snapshot cannot be exported or imported."""

    exit_code = 3


class ExtractError(TenantBackupError):
    """Raised when the COPY of one table fails."""

    exit_code = 3
    transient = True


class StorageError(TenantBackupError):
    """Raised when the object store cannot be reached or refuses a write."""

    exit_code = 3
    transient = True


class LedgerError(TenantBackupError):
    """Raised when a ledger row is missing or not in the state the step expects."""


class VerificationError(TenantBackupError):
    """Raised when an artifact does not match its ledger checksum, its manifest, or is too new."""


class RestoreRefusedError(TenantBackupError):
    """Raised when a restore is refused before any write: no confirmation, another tenant's
    artifact, a table that no longer exists, a cycle that cannot be ordered."""


class ApprovalRejectedError(TenantBackupError):
    """Raised when the approver rejects the restore plan or the approval times out."""

    exit_code = 4


class RestoreFailedError(TenantBackupError):
    """Raised when the database refuses a statement of the restore's apply (a CHECK, foreign key or
    unique constraint, a lost connection); the transaction is rolled back, nothing changed."""

    exit_code = 3


class RestoreCheckError(TenantBackupError):
    """Raised when, before commit, the restored rows do not equal the backup's; rolled back."""

    exit_code = 3
