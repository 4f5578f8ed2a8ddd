"""The command line's argument types: each turns one argument's text into its value, or says in
one line what is wrong with it (argparse prints it as ``error: argument …: <that line>``)."""

from __future__ import annotations

import argparse
import json
import uuid

from tenant_backup.errors import TenantBackupError

__all__ = ["backup_id", "database_url", "json_object", "positive", "storage_url", "user_id"]


def user_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an app user id (a UUID)") from None


def backup_id(text: str) -> str:
    from tenant_backup.naming import backup_reference

    try:
        return backup_reference(text)
    except TenantBackupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def database_url(text: str) -> str:
    from tenant_backup.db import check_session_capable

    try:
        check_session_capable(text)
    except TenantBackupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def storage_url(text: str) -> str:
    scheme = text.split("://", 1)[0] if "://" in text else ""
    from tenant_backup.storage import SCHEMES

    if scheme not in SCHEMES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a storage URL: use s3://bucket/prefix or file:///absolute/dir"
            + (f" ({scheme}:// is not a storage tenant-backup writes to)" if scheme else "")
        )
    return text


def json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object, e.g. {"client_kwargs": {"endpoint_url": "…"}}')
    return text


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value
