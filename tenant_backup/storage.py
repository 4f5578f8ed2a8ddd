"""Object storage through fsspec: ``s3://`` (s3fs), ``file://``, ``memory://``, any fsspec URL.

Artifacts are written once: to a temporary ``.partial`` key next to the final one, then moved
into place when complete, so a reader never sees half an artifact; on error the partial object
is removed.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from fsspec.core import url_to_fs

from tenant_backup.errors import ConfigurationError, StorageError

__all__ = ["Storage"]


class Storage:
    """A storage root (``s3://bucket/prefix``, ``file:///dir``) and its fsspec options."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        if "://" not in url:
            raise ConfigurationError(
                f"storage URL {url!r} has no scheme; use s3://bucket/prefix or file:///absolute/dir"
            )
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        try:
            self.fs, self.root = url_to_fs(self.url, **self.options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"storage URL {url!r} is not usable: {exc}") from exc
        self.protocol = self.url.split("://", 1)[0]

    def full_url(self, key: str) -> str:
        """The URL of ``key`` under the root, e.g. ``s3://bucket/prefix/<tenant>/<file>.zip``."""
        return f"{self.url}/{key}"

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def key_of(self, url: str) -> str:
        """The key of a full URL under this root; raises if the URL lies elsewhere."""
        prefix = self.url + "/"
        if not url.startswith(prefix):
            raise ConfigurationError(f"{url} is not under the storage {self.url}; pass the storage it was written to")
        return url[len(prefix) :]

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
        partial = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.partial")
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
        return bool(self.fs.exists(self.path(key)))

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursively), relative to the root."""
        base = self.path(prefix) if prefix else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(p[len(root) :] if p.startswith(root) else p for p in found)

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
