"""Encrypted artifacts: the age format (age-encryption.org/v1), X25519 recipients, through pyrage
(Python bindings of rage, the Rust implementation). Nothing of the format is written here.

A backup is encrypted to public *recipients* (``age1…``): the backup side needs nothing secret. The
artifact's bytes (a ZIP, a JSON or SQL document, already compressed) go through age as they are
written, in 64 KiB chunks, so memory stays bounded; the stored object is a plain age file, which
``age -d -i key.txt backup.zip.age > backup.zip`` opens. The manifest travels inside.

Reading needs the private *identities* (``AGE-SECRET-KEY-1…``, the lines of an ``age-keygen`` key
file). They never are flow parameters: they come from ``TENANT_BACKUP_IDENTITIES`` (the key text),
``TENANT_BACKUP_IDENTITY_FILE`` (paths, ``:``-separated; the CLI's ``--identity``) or a Prefect
Secret block named by ``TENANT_BACKUP_IDENTITY_BLOCK`` (``blocks.identities``), looked up only when
an encrypted artifact is read.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tenant_backup.artifact.zipwriter import Writer
from tenant_backup.errors import ConfigurationError, EncryptionKeyError, VerificationError

if TYPE_CHECKING:
    from pyrage import x25519

__all__ = [
    "AGE_MAGIC",
    "Encrypting",
    "IdentitySource",
    "check_recipients",
    "decrypt_file",
    "default_recipients",
    "identities_for",
    "identities_in",
    "is_encrypted",
    "load_identities",
    "new_tenant_key",
    "public_key",
    "unwrap_identity",
    "with_tenant_key",
    "wrap_identity",
]

AGE_MAGIC = b"age-encryption.org/v1\n"
_PIPE_CHUNK = 1 << 20

IdentitySource = Callable[[], "list[x25519.Identity]"]  # called only when an encrypted artifact is read


def check_recipients(recipients: list[str] | None, *, what: str = "--encrypt-to") -> list[str]:
    """The recipients in order, each a valid X25519 recipient in its canonical (lower-case) spelling;
    else a ConfigurationError naming the one that is not. An empty one is refused: a variable left
    unset in a script must not quietly give a plain backup."""
    from pyrage import RecipientError, x25519

    found: list[str] = []
    for text in recipients or []:
        item = text.strip()
        if not item:
            raise ConfigurationError(
                f"{what} is given an empty recipient (a variable left unset?); give an age1… public key, or leave "
                f"{what} out for a backup that is not encrypted"
            )
        try:
            canonical = str(x25519.Recipient.from_str(item.lower() if item.upper().startswith("AGE1") else item))
        except (RecipientError, ValueError) as exc:
            secret = item.upper().startswith("AGE-SECRET-KEY-")
            if secret:
                hint = (
                    "that is a private key: give its public key, the 'public key:' line of the key file, or "
                    "`age-keygen -y key.txt`"
                )
            elif item.lower().startswith("age1"):
                hint = "its checksum fails: mistyped or cut short? copy it again from age-keygen's output"
            else:
                hint = "an X25519 recipient starts with age1, as age-keygen prints it"
            shown = "AGE-SECRET-KEY-…" if secret else repr(item[:70])
            raise ConfigurationError(f"{what} {shown} is not an age recipient ({hint})") from exc
        if canonical not in found:
            found.append(canonical)
    return found


def default_recipients() -> list[str]:
    """``TENANT_BACKUP_RECIPIENTS``: recipients separated by commas or spaces (unset or empty: none)."""
    raw = os.environ.get("TENANT_BACKUP_RECIPIENTS", "")
    if not raw:
        return []
    if not raw.strip(" ,\t\n"):
        raise ConfigurationError(
            "TENANT_BACKUP_RECIPIENTS holds no recipient, only separators; give age1… public keys, or unset it"
        )
    return check_recipients([r for r in re.split(r"[\s,]+", raw) if r], what="TENANT_BACKUP_RECIPIENTS:")


class Encrypting:
    """A write-only stream that encrypts what is written to it into ``out``, as an age file.

    pyrage reads its plaintext from a file-like object; the writers of artifacts push bytes. A pipe
    joins the two: pyrage runs in a thread, reading the pipe, while the caller writes into it, so
    both sides stream (the pipe holds at most its buffer). ``close`` writes the last chunk; an
    error on either side reaches the caller."""

    def __init__(self, out: Writer, recipients: list[str]) -> None:
        from pyrage import x25519

        self._recipients = [x25519.Recipient.from_str(r) for r in recipients]
        read_fd, write_fd = os.pipe()
        self._source = os.fdopen(read_fd, "rb", buffering=_PIPE_CHUNK)
        self._sink = os.fdopen(write_fd, "wb", buffering=_PIPE_CHUNK)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encrypt, args=(out,), name="age-encrypt", daemon=True)
        self._thread.start()

    def _encrypt(self, out: Writer) -> None:
        import pyrage

        try:
            pyrage.encrypt_io(self._source, out, self._recipients)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread
            self._error = exc
        finally:
            self._source.close()  # a writer blocked on a full pipe gets EPIPE instead of waiting

    def write(self, data: bytes | memoryview, /) -> int:
        try:
            return self._sink.write(data)
        except BrokenPipeError:
            self._finish()
            raise  # _finish raised the encrypting side's error; this is for a silent end

    def _finish(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """End the plaintext and wait for its last chunk to be written to ``out``."""
        if not self._sink.closed:
            with contextlib.suppress(BrokenPipeError):  # the encrypting side ended first: _finish says why
                self._sink.close()
        self._finish()

    def abort(self) -> None:
        """Stop, the plaintext unfinished: the caller discards ``out``, whatever the thread wrote.
        The pipe's writing end closes first (the reader, maybe blocked in a read, sees its end), so
        that the thread always ends."""
        with contextlib.suppress(OSError):
            self._sink.close()
        self._thread.join()

    def __enter__(self) -> Encrypting:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def is_encrypted(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(AGE_MAGIC)) == AGE_MAGIC


def public_key(identity: x25519.Identity) -> str:
    return str(identity.to_public())


def identities_in(text: str, where: str) -> list[x25519.Identity]:
    """The X25519 identities of a key file's text (comments and blank lines skipped)."""
    from pyrage import IdentityError, x25519

    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except (IdentityError, ValueError) as exc:
            if line.lower().startswith("age1"):
                hint = "a public key; identities (AGE-SECRET-KEY-1…) read backups"
            elif line.upper().count("AGE-SECRET-KEY-") > 1:
                hint = "several keys on one line; give one per line"
            else:
                hint = "not an age identity (AGE-SECRET-KEY-1…, as age-keygen writes it); only X25519 ones are read"
            raise ConfigurationError(f"{where}, line {number}: {hint}") from exc
    if not found:
        raise ConfigurationError(f"{where} holds no age identity (AGE-SECRET-KEY-1…, as age-keygen writes it)")
    return found


def load_identities() -> list[x25519.Identity]:
    """The identities of ``TENANT_BACKUP_IDENTITIES`` and of the files of ``TENANT_BACKUP_IDENTITY_FILE``
    (``blocks.identities`` adds the Secret block named by ``TENANT_BACKUP_IDENTITY_BLOCK``)."""
    found: list[x25519.Identity] = []
    if text := os.environ.get("TENANT_BACKUP_IDENTITIES", "").strip():
        found += identities_in(text, "TENANT_BACKUP_IDENTITIES")
    for name in filter(None, os.environ.get("TENANT_BACKUP_IDENTITY_FILE", "").split(os.pathsep)):
        try:
            text = Path(name).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"identity file {name} cannot be read ({exc.strerror})") from exc
        found += identities_in(text, f"identity file {name}")
    return found


def identities_for(
    backup_id: str, recipients: list[str] | None, identities: IdentitySource = load_identities
) -> list[x25519.Identity]:
    """The identities at hand, refused (naming the backup's recipients) when there are none, or when
    the ledger names the recipients and none of them is at hand: before anything is downloaded."""
    to = f"; it was encrypted to {', '.join(recipients)}" if recipients else ""
    found = identities()
    if not found:
        raise EncryptionKeyError(
            f"backup {backup_id} is encrypted{to}: give the matching age identity with --identity key.txt, "
            "TENANT_BACKUP_IDENTITY_FILE, TENANT_BACKUP_IDENTITIES or a Secret block named by "
            "TENANT_BACKUP_IDENTITY_BLOCK",
            backup_id=backup_id,
        )
    held = [public_key(i) for i in found]
    if recipients and not set(held) & set(recipients):
        raise EncryptionKeyError(
            f"backup {backup_id} cannot be decrypted with the identities at hand (public keys {', '.join(held)})"
            f"{to}: give the identity of one of its recipients",
            backup_id=backup_id,
        )
    return found


def decrypt_file(
    src: Path,
    dest: Path,
    *,
    backup_id: str,
    recipients: list[str] | None = None,
    identities: IdentitySource = load_identities,
) -> None:
    """Decrypt the age file ``src`` into ``dest`` with the identities at hand, streamed.

    Refuses, naming the recipients it was encrypted to (the ledger's word, when known), when no
    identity at hand opens it; a file that opens but fails its authentication is damaged."""
    import pyrage

    to = f"; it was encrypted to {', '.join(recipients)}" if recipients else ""
    held = identities_for(backup_id, recipients, identities)
    try:
        with src.open("rb") as source, dest.open("wb") as out:
            pyrage.decrypt_io(source, out, held)
    except pyrage.DecryptError as exc:  # raised on the header
        dest.unlink(missing_ok=True)
        if "no matching keys" not in str(exc).lower():  # a header MAC that fails, a file cut short
            raise VerificationError(
                f"backup {backup_id} is an age file whose header is damaged ({exc}): it was altered or truncated; "
                "restore another backup",
                backup_id=backup_id,
            ) from exc
        keys = ", ".join(public_key(i) for i in held)
        raise EncryptionKeyError(
            f"backup {backup_id} cannot be decrypted with the identities at hand (public keys {keys}){to}: give "
            "the identity of one of its recipients",
            backup_id=backup_id,
        ) from exc
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if "decryption error" not in str(exc):  # the spool's own disk, not the artifact
            raise
        raise VerificationError(
            f"backup {backup_id} is an age file that fails its authentication ({exc}): it was altered or "
            "truncated; restore another backup",
            backup_id=backup_id,
        ) from exc


def wrap_identity(identity_text: str, operator_recipients: list[str]) -> str:
    """An identity's text encrypted (armored age) to the operator's recipients."""
    import pyrage
    from pyrage import x25519

    wrapped = pyrage.encrypt(
        f"{identity_text.strip()}\n".encode(), [x25519.Recipient.from_str(r) for r in operator_recipients], armored=True
    )
    return bytes(wrapped).decode("ascii")


def new_tenant_key(operator_recipients: list[str]) -> tuple[str, str]:
    """A new X25519 key for one tenant: its public recipient, and its private identity encrypted
    (armored age) to the operator's recipients, the only form in which it is ever stored."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    return str(identity.to_public()), wrap_identity(str(identity), operator_recipients)


def unwrap_identity(
    wrapped: str,
    held: list[x25519.Identity],
    *,
    tenant_id: str,
    wrapped_to: list[str],
    then: str = "give the operator identity with --identity key.txt",
) -> str:
    """The text of a tenant's identity, unwrapped by one of ``held``; refused, naming the keys, else."""
    import pyrage

    try:
        return bytes(pyrage.decrypt(wrapped.encode("ascii"), held)).decode("ascii")
    except (pyrage.DecryptError, OSError, ValueError) as exc:
        keys = f"public keys {', '.join(public_key(i) for i in held)}" if held else "no identity given"
        raise EncryptionKeyError(
            f"the key of tenant {tenant_id} is wrapped to {', '.join(wrapped_to)}; no identity at hand opens it "
            f"({keys}): {then}",
            tenant_id=tenant_id,
        ) from exc


def with_tenant_key(
    identities: IdentitySource, wrapped: str, *, tenant_id: str, wrapped_to: list[str]
) -> IdentitySource:
    """The identities at hand, with the tenant's own identity unwrapped by one of them first."""

    def unwrapped() -> list[x25519.Identity]:
        operator = identities()
        text = unwrap_identity(wrapped, operator, tenant_id=tenant_id, wrapped_to=wrapped_to)
        return [*identities_in(text, f"the key of tenant {tenant_id}"), *operator]

    return unwrapped
