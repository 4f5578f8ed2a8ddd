"""Fetching the artifact of a restore (from its ledger row, or from a file outside the ledger) and
verifying it before anything is restored: the local copy that passed every check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tenant_backup.artifact.encryption import IdentitySource, load_identities
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.artifact.reader import Artifact, fetch_artifact, open_verified
from tenant_backup.errors import ConfigurationError, StorageError, VerificationError
from tenant_backup.ledger.keys import TenantKey
from tenant_backup.restore.identities import reading_identities
from tenant_backup.storage import Storage

__all__ = ["RestoreTarget", "VerifiedArtifact", "fetch_file", "verify"]


class Link(BaseModel):
    """One ancestor of an incremental backup, as the ledger records it."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    storage_path: str
    checksum: str | None
    encrypted_to: list[str] | None = None


class RestoreTarget(BaseModel):
    """The ledger's word on the backup, and the tenant the rows go to."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    source_tenant: str
    tenant_id: str
    storage_path: str
    checksum: str | None
    encrypted_to: list[str] | None = None  # the ledger's word: the age recipients of the artifact
    tenant_key: TenantKey | None = None  # the tenant's own key (wrapped), when the artifact is encrypted to it
    chain: list[Link] = []  # an incremental's ancestors, its base first


class VerifiedArtifact(BaseModel):
    """A local copy of the artifact that passed every check, and its manifest."""

    path: str
    manifest: Manifest
    check_on_read: bool = False  # a CSV ZIP's tables are re-hashed as the restore reads them
    chain: list[VerifiedArtifact] = []  # an incremental's ancestors, its base first

    def open(self) -> Artifact:
        return Artifact(
            Path(self.path),
            self.manifest,
            check_on_read=self.check_on_read,
            chain=[link.open() for link in self.chain],
        )


def fetch_file(
    file: str, storage_options: dict[str, Any], spool: Path, identities: IdentitySource = load_identities
) -> VerifiedArtifact:
    """Copy an artifact that is not in this ledger (a downloaded file, another environment's
    backup) into the spool and verify it by its manifest: every table's sha256 and row count."""
    import fsspec

    dest = spool / "artifact"
    local = "://" not in file or file.startswith("file://")
    try:
        with (
            fsspec.open(file, "rb", **({} if local else storage_options)) as source,
            dest.open("wb") as out,
        ):
            while chunk := source.read(1 << 20):
                out.write(chunk)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"--file {file}: no such file or object; check the path or URL") from exc
    except OSError as exc:
        raise ConfigurationError(f"--file {file} cannot be read ({exc})") from exc
    artifact = open_verified(dest, backup_id=file, identities=identities)
    if artifact.manifest.kind == "incremental":
        raise ConfigurationError(
            f"--file {file} is incremental backup {artifact.manifest.backup_id}: it holds only the changes since "
            f"backup {artifact.manifest.parent_id}, and a restore needs its whole chain; restore it by its id from the "
            "ledger it was taken with, or restore a full backup"
        )
    return VerifiedArtifact(path=str(artifact.path), manifest=artifact.manifest)


def verify(
    storage: Storage, target: RestoreTarget, spool: Path, identities: IdentitySource = load_identities
) -> VerifiedArtifact:
    """Download and verify the artifact (an incremental: each backup of its chain, which must link
    up); refuse another tenant's artifact."""
    reading = reading_identities(identities, target.tenant_key)
    links = [
        *target.chain,
        Link(**target.model_dump(include={"backup_id", "storage_path", "checksum", "encrypted_to"})),
    ]
    verified: list[VerifiedArtifact] = []
    for i, link in enumerate(links):
        folder = spool if i == len(links) - 1 else spool / f"link-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            artifact = fetch_artifact(
                storage,
                link.storage_path,
                link.checksum,
                folder / "artifact",
                backup_id=link.backup_id,
                encrypted_to=link.encrypted_to,
                identities=reading,
            )
        except (VerificationError, StorageError) as exc:  # a link damaged, or gone from storage
            if i == len(links) - 1:
                raise
            raise VerificationError(
                f"incremental backup {target.backup_id} needs backup {link.backup_id} of its chain (link {i + 1} of "
                f"{len(links)}), which fails verification: {exc}",
                backup_id=target.backup_id,
                tenant_id=target.source_tenant,
            ) from exc
        manifest = artifact.manifest
        if manifest.backup_id != link.backup_id or manifest.tenant_id != target.source_tenant:
            raise VerificationError(
                f"the artifact at {link.storage_path} belongs to backup {manifest.backup_id} of tenant "
                f"{manifest.tenant_id}, not to backup {link.backup_id} of tenant {target.source_tenant}; "
                "it was replaced in storage: restore another backup",
                backup_id=target.backup_id,
                tenant_id=target.source_tenant,
            )
        expected = verified[-1].manifest.backup_id if verified else None
        if manifest.parent_id != expected or (verified and manifest.chain_seed != verified[0].manifest.chain_seed):
            raise VerificationError(
                f"backup {link.backup_id} does not follow {expected or 'nothing'} in the chain of backup "
                f"{target.backup_id} (its manifest names parent {manifest.parent_id}): the ledger and the artifacts "
                "disagree; restore a full backup",
                backup_id=target.backup_id,
                tenant_id=target.source_tenant,
            )
        verified.append(
            VerifiedArtifact(path=str(artifact.path), manifest=manifest, check_on_read=artifact.check_on_read)
        )
    return verified[-1].model_copy(update={"chain": verified[:-1]})
