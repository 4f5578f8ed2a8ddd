"""Object storage through fsspec: ``s3://`` (s3fs), ``file://``, ``memory://``, any fsspec URL.

Artifacts are written once: to a temporary ``.partial`` key next to the final one, then moved
into place when complete, so a reader never sees half an artifact; on error the partial object
is removed. A writer killed on the way leaves its ``.partial`` object (or, on S3, an incomplete
multipart upload): :func:`is_partial` and :meth:`Storage.uploads` find them for the clean-up.

A key is ``/``-separated segments under the root; a key that could leave the root or alias
another (a leading ``/``, an empty, ``.`` or ``..`` segment) is refused before any call.
"""

from __future__ import annotations

import builtins
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from fsspec.core import url_to_fs

from tenant_backup.errors import ConfigurationError, StorageError

__all__ = ["PARTIAL_SUFFIX", "Storage", "Upload", "check_key", "is_partial"]

PARTIAL_SUFFIX = ".partial"


def is_partial(key: str) -> bool:
    """Whether ``key`` is a temporary object of :meth:`Storage.write_atomic` (``.<name>.<rand>.partial``)."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def check_key(key: str) -> str:
    """``key`` itself, or ConfigurationError when it could leave the root or alias another key."""
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ConfigurationError(
            f"storage key {key!r} is refused: it has a leading '/' or an empty, '.' or '..' segment, so it could "
            "leave the storage root; keys are built from encoded segments (a bug or a hand-edited ledger row)"
        )
    return key


@dataclass(frozen=True)
class Upload:
    """An incomplete S3 multipart upload: what a writer killed mid-upload leaves behind."""

    key: str
    upload_id: str


# Object stores and file systems that fsspec writes atomically enough for us (a move after the upload).
SCHEMES = ("s3", "s3a", "file", "gs", "gcs", "az", "abfs", "abfss", "memory")


class Storage:
    """A storage root (``s3://bucket/prefix``, ``file:///dir``) and its fsspec options."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        if "://" not in url:
            raise ConfigurationError(
                f"storage URL {url!r} has no scheme; use s3://bucket/prefix or file:///absolute/dir"
            )
        scheme = url.split("://", 1)[0]
        if scheme not in SCHEMES:
            raise ConfigurationError(
                f"{scheme}:// is not a storage tenant-backup writes to (--storage / TENANT_BACKUP_STORAGE_URL); use "
                "s3://bucket/prefix (AWS S3, MinIO, Supabase Storage's S3 endpoint), file:///absolute/dir, or gs:// / "
                "az:// with their fsspec package installed"
            )
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        try:
            self.fs, self.root = url_to_fs(self.url, **self.options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"storage URL {url!r} is not usable: {exc}") from exc
        self.protocol = self.url.split("://", 1)[0]

    def full_url(self, key: str) -> str:
        """The URL of ``key`` under the root, e.g. ``s3://bucket/prefix/<db>/<tenant>/<file>.zip``."""
        return f"{self.url}/{check_key(key)}"

    def path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def key_of(self, url: str) -> str:
        """The key of a full URL under this root; raises if the URL lies elsewhere."""
        if not url.startswith(self.url + "/"):
            raise ConfigurationError(f"{url} is not under the storage {self.url}; pass the storage it was written to")
        return check_key(url[len(self.url) + 1 :])

    def key_in(self, url: str) -> str | None:
        """The key of a full URL under this root, or None when the URL lies elsewhere (another
        root, or outside this one through a ``..`` segment)."""
        prefix = self.url + "/"
        if not url.startswith(prefix):
            return None
        try:
            return check_key(url[len(prefix) :])
        except ConfigurationError:
            return None

    def check(self) -> None:
        """Fail early, before any extraction, when the storage cannot be reached."""
        try:
            if self.protocol == "file":
                self.fs.makedirs(self.root, exist_ok=True)
            else:
                self.fs.ls(self.root.split("/", 1)[0], detail=False)
        except FileNotFoundError as exc:
            raise StorageError(f"storage {self.url} does not exist ({exc}); create the bucket first") from exc
        except Exception as exc:  # every backend raises its own types
            raise StorageError(
                f"storage {self.url} cannot be reached: {_short(exc)}; check the URL and options"
            ) from exc

    @contextmanager
    def write_atomic(self, key: str) -> Iterator[BinaryIO]:
        """Write ``key`` through a temporary object, made visible only when the block succeeds."""
        final = self.path(key)
        folder, name = posixpath.split(final)
        partial = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            if self.protocol == "file":
                self.fs.makedirs(folder, exist_ok=True)
            handle = self.fs.open(partial, "wb")
        except Exception as exc:
            raise StorageError(f"cannot write to storage {self.url}: {_short(exc)}") from exc
        try:
            yield handle
            handle.close()
            self.fs.mv(partial, final)
        except BaseException as exc:
            _discard(handle)
            try:
                if self.fs.exists(partial):
                    self.fs.rm(partial)
            except Exception:  # noqa: BLE001 - best effort: the original error matters more
                pass
            if isinstance(exc, Exception) and not isinstance(exc, StorageError) and _is_storage_error(exc):
                raise StorageError(f"writing {self.full_url(key)} failed: {_short(exc)}") from exc
            raise

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.fs.open(self.path(key), "rb")  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            raise StorageError(f"{self.full_url(key)} does not exist") from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists now (not per a listing cached by this process's filesystem)."""
        path = self.path(key)
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def list(self, prefix: str = "") -> list[str]:
        """Keys inside the folder ``prefix`` (recursively; every key when empty), relative to the
        root. A folder, not a string prefix: ``list("a")`` never returns ``ab/…``."""
        base = self.path(prefix) if prefix else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/"
        inside = root + prefix + "/" if prefix else root
        return sorted(p[len(root) :] for p in found if p.startswith(inside))

    def uploads(self, prefix: str) -> builtins.list[Upload]:
        """Incomplete multipart uploads under the folder ``prefix`` (S3 only; empty elsewhere)."""
        if self.protocol not in ("s3", "s3a"):
            return []
        bucket, _, base = self.path(prefix).partition("/")
        found: builtins.list[Upload] = []
        marker: dict[str, str] = {}
        try:
            while True:
                page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=base + "/", **marker)
                found += [
                    Upload(self._key_from(f"{bucket}/{u['Key']}"), u["UploadId"]) for u in page.get("Uploads", [])
                ]
                if not page.get("IsTruncated"):
                    return found
                marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
        except Exception as exc:
            raise StorageError(f"cannot list the uploads under {self.full_url(prefix)}: {_short(exc)}") from exc

    def abort_upload(self, upload: Upload) -> None:
        bucket, _, key = self.path(upload.key).partition("/")
        try:
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)
        except Exception as exc:
            raise StorageError(f"cannot abort the upload of {self.full_url(upload.key)}: {_short(exc)}") from exc

    def _key_from(self, path: str) -> str:
        return path[len(self.root.rstrip("/")) + 1 :]

    def remove(self, key: str) -> None:
        """Delete ``key``; an object already gone is not an error."""
        try:
            self.fs.rm(self.path(key))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StorageError(f"cannot delete {self.full_url(key)}: {_short(exc)}") from exc

    def download_url(self, key: str, expires: int = 3600) -> str:
        """A URL that downloads ``key`` without credentials for ``expires`` seconds (S3 presigned
        GET), or the local path for ``file://``."""
        if self.protocol == "file":
            return str(self.path(key))
        if not self.exists(key):
            raise StorageError(f"{self.full_url(key)} does not exist")
        try:
            return str(self.fs.sign(self.path(key), expiration=expires))
        except NotImplementedError as exc:
            raise StorageError(f"storage {self.url} cannot sign download URLs; download it with verify") from exc


def _discard(handle: Any) -> None:
    """Abort an unfinished upload (s3fs aborts the multipart upload) instead of committing it."""
    discard = getattr(handle, "discard", None)
    try:
        if callable(discard):
            discard()
        elif not handle.closed:
            handle.close()
    except Exception:  # noqa: BLE001
        pass


def _is_storage_error(exc: Exception) -> bool:
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in {"botocore", "aiobotocore", "s3fs"}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
