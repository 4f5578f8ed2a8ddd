"""The steps of a tenant backup as plain functions; ``tasks/`` wraps each one as a Prefect task.

Each step opens what it needs from a database URL and returns small serializable values
(a plan, a backup id, a table part, artifact info), never connections.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tenant_backup import ledger
from tenant_backup.artifact.codecs import Compression, check_compression, default_level
from tenant_backup.artifact.formats import ArtifactFormat, check_types
from tenant_backup.artifact.manifest import Manifest
from tenant_backup.backup import assemble as artifact
from tenant_backup.backup.assemble import ArtifactInfo
from tenant_backup.backup.chain import ChainPlan, plan_chain, timeline
from tenant_backup.backup.changes import changed_filter, read_keys, xid_params
from tenant_backup.backup.extract import TablePart, extract_table
from tenant_backup.backup.recipients import artifact_recipients, operator_recipients
from tenant_backup.db import DatabaseOwner, read_owner
from tenant_backup.errors import ConfigurationError, LedgerError, PermissionDeniedError, TenantBackupError
from tenant_backup.ledger import chains
from tenant_backup.locks import import_snapshot
from tenant_backup.segments import encode_segment, spool_name
from tenant_backup.sessions import session
from tenant_backup.settings import Settings
from tenant_backup.storage import Storage
from tenant_backup.tenancy import tenants
from tenant_backup.tenancy.access import check_access
from tenant_backup.tenancy.admins import check_admin
from tenant_backup.tenancy.catalog import Catalog, ForeignKey, TableScope, read_catalog
from tenant_backup.tenancy.fk_order import restore_order
from tenant_backup.tenancy.profiles import Profile, discovered_profile, load_profile
from tenant_backup.tenancy.scope import plan_scope, schema_fingerprint
from tenant_backup.tenancy.tenants import check_tenant, left_out, tables_read

__all__ = [
    "BackupPlan",
    "BackupRequest",
    "extract_part",
    "plan_backup",
    "resolve_profile",
    "write_artifact",
]


class BackupRequest(BaseModel):
    """What was asked: the flow's parameters, minus where things live."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    categories: list[str] | None = None
    profile: str | None = None
    tenant_column: str | None = None
    requested_by: str | None = None
    backup_type: Literal["manual", "scheduled"] = "manual"
    force: bool = False
    allow_empty: bool = False  # without a tenant table: back up a tenant that has no row anywhere yet
    name: str | None = None
    format: ArtifactFormat = "csv"
    compression: Compression = "deflate"
    compression_level: int | None = None
    schedule_id: str | None = None
    encrypt_to: list[str] | None = None  # age recipients (public keys); default TENANT_BACKUP_RECIPIENTS
    tenant_key: bool | None = None  # encrypt to the tenant's own key (wrapped to encrypt_to); default TENANT_KEYS
    kind: Literal["full", "incremental"] = "full"  # incremental: the changes since the tenant's newest backup

    @property
    def level(self) -> int:
        return default_level(self.compression) if self.compression_level is None else self.compression_level

    @field_validator("categories", "encrypt_to", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return value or None  # [] (a form left empty): every category; TENANT_BACKUP_RECIPIENTS

    @field_validator("requested_by", mode="before")
    @classmethod
    def _user_id_as_text(cls, value: Any) -> Any:
        return str(value) if value else None

    @model_validator(mode="before")
    @classmethod
    def _column_over_profile(cls, data: Any) -> Any:
        """A tenant column asks for discovery: the default profile gives way."""
        if isinstance(data, dict) and data.get("tenant_column"):
            return {**data, "profile": None}
        return data


class BackupPlan(BaseModel):
    """The checked request and every table's scope, largest table first."""

    model_config = ConfigDict(frozen=True)

    request: BackupRequest
    database: DatabaseOwner
    profile: str
    profile_doc: dict[str, Any]
    tenant_column: str
    tenant_name: str | None
    db_schema: str
    type: Literal["full", "partial"]
    categories: list[str]
    tables: list[TableScope]
    table_order: list[str]  # as stored: parents first for SQL and JSON, by name for CSV
    name_key: str
    schema_fingerprint: str
    foreign_keys: list[ForeignKey] = []  # from or to a backed-up table (the SQL artifact checks them)
    left_out: list[str] = []  # tables holding the tenant column that this backup does not hold
    encrypt_to: list[str] = []  # the age recipients of the artifact (none: not encrypted)
    tenant_key: bool = False  # encrypt_to is the tenant's own key (crypto-erasure: erase-tenant)
    chain: ChainPlan | None = None  # asked for an incremental: its parent, or a full backup starting a chain
    timeline: int | None = None  # the server's, when the chain was planned

    @property
    def incremental(self) -> bool:
        return self.chain is not None and self.chain.parent is not None

    @property
    def relations(self) -> list[tuple[str, str]]:
        """(schema, table) of every backed-up table, as PostgreSQL names them."""
        return [(s.schema_name, s.relname or s.table) for s in self.tables]


def resolve_profile(profile: str | None, tenant_column: str | None) -> Profile:
    """A shipped or file profile, or a discovered one from a tenant column; exactly one of them."""
    if profile and tenant_column:
        raise ConfigurationError("give either a profile or a tenant column, not both")
    if profile:
        return load_profile(profile)
    if tenant_column:
        return discovered_profile(tenant_column)
    raise ConfigurationError("no profile and no tenant column: pass --profile pos|crm|FILE or --tenant-column COLUMN")


def plan_backup(db_url: str, settings: Settings, request: BackupRequest) -> BackupPlan:
    """Check the request against the catalog, the profile and the admin rule.

    Raises before anything is written. A refused requester is logged in backup_restore_logs.
    """
    profile = resolve_profile(request.profile, request.tenant_column)
    check_compression(request.compression, request.level, request.format)
    if request.kind == "incremental" and request.format != "csv":
        raise ConfigurationError(
            f"an incremental backup cannot be a {request.format} artifact: "
            + (
                "a SQL script must bring the whole tenant back on its own (psql -f), and an incremental holds only "
                "changes"
                if request.format == "sql"
                else "seed 000's JSON document is read as the tenant's whole data, and an incremental holds only "
                "changes"
            )
            + "; use --format csv (the default) for incrementals, or take a full backup in this format"
        )
    operator = operator_recipients(request.encrypt_to)
    encode_segment(request.tenant_id)  # an id that cannot be stored is refused before anything is written
    with session(db_url, lock_timeout=settings.lock_timeout) as conn:
        ledger.migrate(conn, settings.ledger_schema)
        database = read_owner(conn)
        catalog = read_catalog(conn, profile.db_schema, profile.schemas)
        tables = profile.tables_for(request.categories) if profile.categories else None
        if tables is None and request.categories:
            tables = request.categories  # discovered profile: categories are table names
        scopes = plan_scope(catalog, profile, tables)
        check_types(scopes)
        order = _stored_order(catalog, scopes, request.format)
        skipped = left_out(conn, catalog, profile, scopes, settings.ledger_schema)
        read = tables_read(catalog, profile, scopes, request.requested_by)
        check_access(conn, {t: ["SELECT"] for t in read}, action="back up", tenant_id=request.tenant_id)
        if request.requested_by:
            try:
                check_admin(conn, profile, request.tenant_id, request.requested_by, "back up")
            except PermissionDeniedError as exc:
                ledger.log_action(
                    conn,
                    settings.ledger_schema,
                    action="backup",
                    result="failed",
                    tenant_id=request.tenant_id,
                    performed_by=request.requested_by,
                    error=str(exc),
                )
                raise
        tenant = check_tenant(conn, catalog, profile, request.tenant_id, allow_empty=request.allow_empty)
        tenant_name, request = tenant.name, request.model_copy(update={"tenant_id": tenant.id})
        tenant_key = settings.tenant_keys if request.tenant_key is None else request.tenant_key
        recipients = artifact_recipients(conn, settings.ledger_schema, tenant.id, operator, tenant_key)
        categories = request.categories or (list(profile.categories) or [s.table for s in scopes])
        fingerprint = schema_fingerprint(scopes)
        chain, line = None, None
        if request.kind == "incremental":
            line = timeline(conn)
            chain = plan_chain(
                conn,
                settings.ledger_schema,
                tenant_id=tenant.id,
                scopes=scopes,
                wanted={
                    "format": request.format,
                    "profile": profile.name,
                    "tenant_column": profile.tenant_column,
                    "categories": categories,
                    "schema_fingerprint": fingerprint,
                },
                database=database,
                line=line,
                chain_days=settings.chain_days,
                chain_links=settings.chain_links,
            )
        if not request.force:  # early, before any lock is taken; the ledger entry checks it again under the lock
            ledger.check_throttle(
                conn, settings.ledger_schema, request.tenant_id, timedelta(seconds=settings.throttle_seconds)
            )
    return BackupPlan(
        request=request,
        database=database,
        profile=profile.name,
        profile_doc=profile.model_dump(mode="json", by_alias=True),
        tenant_column=profile.tenant_column,
        tenant_name=tenant_name,
        db_schema=profile.db_schema,
        type="full" if profile.is_full(request.categories) else "partial",
        categories=categories,
        tables=sorted(scopes, key=lambda s: -s.est_rows),
        table_order=order,
        name_key=profile.name_key,
        schema_fingerprint=fingerprint,
        foreign_keys=[fk for fk in catalog.foreign_keys if {fk.table, fk.ref_table} & {s.table for s in scopes}],
        left_out=skipped,
        encrypt_to=recipients,
        tenant_key=tenant_key,
        chain=chain,
        timeline=line,
    )


def _stored_order(catalog: Catalog, scopes: list[TableScope], fmt: ArtifactFormat) -> list[str]:
    """Tables in the artifact's order. A SQL script loads parents first, one COPY per table, so
    foreign keys between tables must not form a cycle unless one of them is deferrable (a
    self-reference is fine: COPY checks it at the end of the statement)."""
    names = sorted(s.table for s in scopes)
    if fmt == "csv":
        return names
    order = restore_order(names, catalog.foreign_keys)
    cyclic = [fk for fk in order.broken if fk.table != fk.ref_table]
    if fmt == "sql" and cyclic:
        raise ConfigurationError(
            f"tables {', '.join(sorted({fk.table for fk in cyclic}))} reference each other through non-deferrable "
            "foreign keys, which a SQL script cannot load in one pass: use format csv or json (the restore flow "
            "orders such rows), or make one of the keys DEFERRABLE"
        )
    return list(order.tables)


def extract_part(
    db_url: str,
    settings: Settings,
    scope: TableScope,
    snapshot_id: str,
    spool: Path,
    request: BackupRequest,
    chain: ChainPlan | None = None,
) -> TablePart:
    """Extract one table inside the shared snapshot into ``spool``, in the requested format; in a
    chain, digest its keys too, and in an incremental extract only its changed rows."""
    tenant_id = request.tenant_id
    dest = spool / f"{spool_name(scope.table)}.part"
    with session(db_url, lock_timeout=settings.lock_timeout) as conn:
        import_snapshot(conn, snapshot_id, tenant_id)
        try:
            keys, only, params = None, None, {}
            if chain is not None and scope.table in chain.buckets:
                parent = chain.parent
                before = (
                    chains.read_digest(conn, settings.ledger_schema, parent.backup_id, scope.table) if parent else None
                )
                if parent is not None and before is None:  # open_entry checked them under the lock
                    raise LedgerError(
                        f"the key digests of table {scope.table} in backup {parent.backup_id} are gone: this "
                        f"incremental of tenant {tenant_id} could not find its deleted rows; run it again",
                        backup_id=parent.backup_id,
                        tenant_id=tenant_id,
                        table=scope.table,
                    )
                keys = read_keys(
                    conn,
                    scope,
                    tenant_id,
                    seed=chain.seed,
                    buckets=chain.buckets[scope.table] or None,
                    parent_digests=before,
                    dest=dest,
                )
                if parent is not None:
                    only, params = changed_filter(scope), xid_params(parent.xids)
            part = extract_table(
                conn,
                scope,
                tenant_id,
                dest,
                fmt=request.format,
                compression=request.compression,
                level=request.level,
                only=only,
                params=params,
            )
            return part.model_copy(update={"changes": only is not None, "key_state": keys})
        finally:
            conn.execute("ROLLBACK")


def write_artifact(storage: Storage, plan: BackupPlan, manifest: Manifest, parts: list[TablePart]) -> ArtifactInfo:
    return artifact.write_artifact(
        storage, manifest, parts, plan.tables, plan.name_key, plan.foreign_keys, plan.encrypt_to
    )


def error_text(exc: BaseException) -> str:
    """One line for the ledger: our messages as they are, others with their type."""
    if isinstance(exc, TenantBackupError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def list_tenants(
    db_url: str, settings: Settings, profile_name: str | None, tenant_column: str | None
) -> tenants.TenantList:
    """Every tenant and its name (the tenant table's rows, else the distinct values of the tenant
    column), and the ids that rows hold but the tenant table lacks (no backup would hold them)."""
    profile = resolve_profile(profile_name, tenant_column)
    with session(db_url, lock_timeout=settings.lock_timeout) as conn:
        catalog = read_catalog(conn, profile.db_schema, profile.schemas)
        return tenants.TenantList(
            tenants.list_tenants(conn, catalog, profile), tenants.unlisted_tenants(conn, catalog, profile)
        )
