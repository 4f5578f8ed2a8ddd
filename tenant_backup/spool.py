"""Local spool folders of backups, restores and verifications, and the clean-up of dead ones.

A run's folder (``tenant-backup-*``, ``tenant-restore-*``, ``tenant-verify-*`` under the spool
root) holds ``.lock``, locked with ``flock`` by the run for as long as it lives. The operating
system drops the lock when the process ends, however it ends (``kill -9`` too), so a folder whose
lock can be taken belongs to no live run: :func:`sweep` removes those, and every run sweeps
before it makes its own. The lock file is locked under a temporary name and then renamed, so a
sweeper never sees ``.lock`` unlocked while its run is starting. Folders without ``.lock`` (made
by an older version, or by a process killed within the microseconds between the two steps) are
left alone. ``flock`` is per host: give each machine a spool root of its own (the default, the
system's temporary folder, is).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = ["SpoolKind", "spool_dir", "sweep"]

SpoolKind = Literal["backup", "restore", "verify"]
_LOCK = ".lock"
_FOLDER = re.compile(r"^tenant-(backup|restore|verify)-[a-z0-9_]{8}$")  # what mkdtemp makes of our prefixes


def _root(root: str | Path | None) -> Path:
    return Path(root) if root else Path(tempfile.gettempdir())


def sweep(root: str | Path | None = None) -> list[str]:
    """Remove the spool folders under ``root`` (default: the temporary folder) whose run is dead;
    returns their paths."""
    removed: list[str] = []
    try:
        folders = sorted(p for p in _root(root).iterdir() if _FOLDER.match(p.name))
    except FileNotFoundError:
        return removed
    for folder in folders:
        try:
            fd = os.open(folder / _LOCK, os.O_RDWR)
        except OSError:  # no lock file (yet), or gone
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run holds it
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
        finally:
            os.close(fd)
    return removed


@contextmanager
def spool_dir(kind: SpoolKind, root: str | Path | None = None) -> Iterator[str]:
    """A new spool folder for one run, locked while the block runs and removed after it; dead
    runs' folders under ``root`` are removed first."""
    base = _root(root)
    base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    folder = Path(tempfile.mkdtemp(prefix=f"tenant-{kind}-", dir=base))
    fd = os.open(folder / f"{_LOCK}.new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
        (folder / f"{_LOCK}.new").rename(folder / _LOCK)
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
