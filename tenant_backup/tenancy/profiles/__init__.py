"""Profiles: what a tenant is in one app's schema, and which tables each category holds.

A profile is a frozen pydantic model, loaded from a TOML or YAML file or by the name of a shipped
one (``pos`` for seed 000, ``crm`` for seed 001). Without a profile, :func:`discovered_profile`
builds one from a tenant column alone and the catalog fills in the tables.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenant_backup.errors import ConfigurationError, UnknownCategoryError

__all__ = [
    "AdminRule",
    "Profile",
    "TenantTable",
    "discovered_profile",
    "load_profile",
    "shipped_profiles",
    "stored_profile",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TenantTable(_Frozen):
    """The table whose rows are the tenants."""

    name: str = Field(description="Table name, e.g. etablissements.")
    key: str = Field("id", description="Its key column, the value of the tenant column elsewhere.")
    display_name: str | None = Field(None, description="Column with the tenant's display name.")


class AdminRule(_Frozen):
    """Who counts as an admin of a tenant: a row of ``table`` with one of ``roles``."""

    table: str
    user_column: str = "id"
    tenant_column: str
    role_column: str = "role"
    roles: tuple[str, ...]
    active_column: str | None = Field(
        None, description="Boolean column a user's row must hold true in (e.g. actif): a deactivated admin is none."
    )


class Profile(_Frozen):
    """How one app lays out its tenants."""

    name: str
    description: str = ""
    db_schema: str = Field(
        "public", alias="schema", description="Default schema of the app's tables (named without a schema)."
    )
    other_schemas: tuple[str, ...] = Field(
        (), description="More schemas whose tables discovery considers; a listed table elsewhere is schema.table."
    )
    tenant_column: str = Field(description="Column that holds the tenant id, e.g. etablissement_id.")
    tenant_table: TenantTable | None = None
    admin: AdminRule | None = None
    categories: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Category name -> tables. Empty: discover from the catalog."
    )
    exclude_tables: tuple[str, ...] = Field((), description="Tables never backed up (discovery).")
    document_name_key: str | None = Field(
        None, description="Key of the tenant's name in JSON artifacts (seed 000: etablissement_nom)."
    )

    @property
    def schemas(self) -> tuple[str, ...]:
        """The default schema first, then every other schema the profile names (``schema.table``)."""
        tables = [t for group in self.categories.values() for t in group]
        tables += [self.tenant_table.name] if self.tenant_table else []
        tables += [self.admin.table] if self.admin else []
        named = {*self.other_schemas, *(t.partition(".")[0] for t in tables if "." in t)}
        return (self.db_schema, *sorted(named - {self.db_schema}))

    def describe_schemas(self) -> str:
        """``schema 'public'`` or ``schemas 'public', 'billing'``, for messages."""
        return f"schema{'s' if len(self.schemas) > 1 else ''} {', '.join(map(repr, self.schemas))}"

    @property
    def name_key(self) -> str:
        """``etablissement_nom`` for seed 000; else the tenant column with ``_name`` for ``_id``."""
        return self.document_name_key or f"{self.tenant_column.removesuffix('_id')}_name"

    def tables_for(self, categories: list[str] | None) -> list[str]:
        """The tables of ``categories`` (all categories when None), in profile order, no repeats.

        Raises :class:`UnknownCategoryError` naming the known categories, never returns empty.
        """
        if not self.categories:
            raise ConfigurationError(
                f"profile {self.name!r} lists no categories; discover the tables from the catalog first"
            )
        wanted = categories if categories else list(self.categories)
        unknown = [c for c in wanted if c not in self.categories]
        if unknown:
            raise UnknownCategoryError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))} "
                f"for profile {self.name!r}; choose among: {', '.join(self.categories)}"
            )
        seen: dict[str, None] = {}
        for category in wanted:
            for table in self.categories[category]:
                seen.setdefault(table, None)
        return list(seen)

    def is_full(self, categories: list[str] | None) -> bool:
        """True when ``categories`` covers every category of the profile (seed 000's type full)."""
        return not categories or set(categories) >= set(self.categories)


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``tenant_backup/profiles``."""
    folder = resources.files("tenant_backup.tenancy.profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name (``pos``, ``crm``) or a profile file (``.toml``, ``.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in {".toml", ".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise ConfigurationError(f"profile file {name_or_path!r} does not exist")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        if name_or_path not in shipped_profiles():
            raise ConfigurationError(
                f"no shipped profile {name_or_path!r}; use one of {', '.join(shipped_profiles())} "
                "or the path of a .toml / .yaml profile file"
            )
        text = resources.files("tenant_backup.tenancy.profiles").joinpath(f"{name_or_path}.toml").read_text("utf-8")
        source = f"{name_or_path}.toml"
    try:
        data = tomllib.loads(text) if source.endswith(".toml") else yaml.safe_load(text)
        return Profile.model_validate(data)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"profile {source} is not valid: {exc}") from exc


def discovered_profile(tenant_column: str, schema: str = "public") -> Profile:
    """A profile with only a tenant column: tables and the tenant table come from the catalog."""
    return Profile(name=f"discovered:{tenant_column}", tenant_column=tenant_column, db_schema=schema)


def stored_profile(doc: dict[str, Any] | None, tenant_column: str, schema: str = "public") -> Profile:
    """The profile a backup was taken with (kept whole in its manifest and ledger row), or, for a
    backup that has none, the discovered profile of its tenant column."""
    return Profile.model_validate(doc) if doc else discovered_profile(tenant_column, schema)
