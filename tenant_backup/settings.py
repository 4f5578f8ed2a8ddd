"""Runtime knobs, read from the environment with the ``TENANT_BACKUP_`` prefix."""

from __future__ import annotations

import os
import re

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenant_backup.errors import ConfigurationError

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Settings of tenant-backup; each field is also ``TENANT_BACKUP_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TENANT_BACKUP_", extra="ignore")

    database_url: str | None = Field(None, description="PostgreSQL URL (direct or session pooler).")
    storage_url: str | None = Field(None, description="Where artifacts go: s3://bucket/prefix, file:///dir.")
    storage_options: dict[str, object] = Field(
        default_factory=dict, description="fsspec options for the storage, as JSON."
    )
    ledger_schema: str = Field("tenant_backup", description="Schema of the ledger tables.")
    max_workers: int = Field(
        default_factory=lambda: max(2, min(4, os.cpu_count() or 2)),
        ge=1,
        description="Tables extracted at once for one tenant, and sessions reading a restore's tenant rows "
        "(one connection each).",
    )
    tenant_concurrency: int = Field(2, description="Tenants backed up at once by backup_all_tenants.")
    lock_timeout: str = Field(
        "10s",
        description="PostgreSQL lock_timeout for every session (e.g. 10s, 500ms, 2min).",
    )
    work_mem: str = Field(
        "256MB",
        description="PostgreSQL work_mem inside a restore's transaction (e.g. 256MB).",
    )
    throttle_seconds: int = Field(300, description="At most one backup per tenant in this window.")
    tenant_keys: bool = Field(
        False, description="Encrypt each tenant's backups to its own key, wrapped to RECIPIENTS (erase-tenant)."
    )
    freshness_hours: float = Field(
        24, gt=0, description="status: a tenant without a schedule is stale when its newest backup is older."
    )
    chain_days: float = Field(
        7, gt=0, description="Incremental backups: a new full base once the chain's base is older (weekly full)."
    )
    chain_links: int = Field(30, ge=1, description="Incremental backups: a new full base after this many incrementals.")
    spool_dir: str | None = Field(None, description="Local folder for table parts (default: temp).")
    timezone: str = Field("UTC", description="Time zone of the schedules (IANA name, e.g. Europe/Paris).")
    slots: int = Field(
        2,
        ge=0,
        description="Backups at once on one database, over every process and machine (advisory locks in "
        "the database itself); empty or 0 for no limit.",
    )
    slot_timeout: float = Field(600, gt=0, description="Seconds a backup waits for a free slot before it fails.")
    max_backups: int | None = Field(50, description="Retention: at most this many backups per tenant (seed 001).")
    max_age_days: int | None = Field(7, description="Retention: none older, unless a schedule says otherwise.")
    keep_daily: int = Field(0, description="Retention: also keep the newest backup of each of the last N days.")
    keep_weekly: int = Field(0, description="… of each of the last N ISO weeks.")
    keep_monthly: int = Field(0, description="… of each of the last N months.")

    @field_validator("lock_timeout")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*", value):
            raise ValueError("expected a PostgreSQL duration such as 10s, 500ms or 2min")
        return value.strip()

    @field_validator("work_mem")
    @classmethod
    def _a_size(cls, value: str) -> str:
        if not re.fullmatch(r"\s*\d+\s*(B|kB|MB|GB|TB)?\s*", value):
            raise ValueError("expected a PostgreSQL size such as 256MB or 1GB")
        return value.strip()

    @field_validator("slots", mode="before")
    @classmethod
    def _empty_is_no_limit(cls, value: object) -> object:
        return 0 if value is None or (isinstance(value, str) and not value.strip()) else value


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; never cached, so tests can change it).
    A bad value is a ConfigurationError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TENANT_BACKUP_{str(e['loc'][0]).upper()}={e.get('input')!r}: {_message(e['msg'])}" for e in exc.errors()
        )
        raise ConfigurationError(f"bad setting: {problems}; fix it in the environment (or .env)") from exc


def _message(text: str) -> str:
    """pydantic's message, as the rest of a sentence: "Input should be …" -> "input should be …";
    a validator's own ("Value error, expected …") without its prefix, its case kept (10s, MB)."""
    text = text.removeprefix("Value error, ")
    return text[:1].lower() + text[1:]
