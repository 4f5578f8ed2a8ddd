"""Names a person reads: a tenant as its slugged name and short id (``le-wouri-bonapriso-8b42958c``),
a backup as its id or a prefix of it (``298d7369``)."""

from __future__ import annotations

import re
import unicodedata
import uuid

__all__ = ["backup_reference", "short_id", "slug", "tenant_label", "tenant_tags"]


_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")


def backup_reference(text: str) -> str:
    """A backup as typed: its canonical UUID, or a lower-case prefix of one (at least 4 characters,
    as git and docker accept). Anything else is refused here, before any connection is made."""
    from tenant_backup.errors import ConfigurationError

    text = text.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if not _PREFIX.match(text):
        raise ConfigurationError(
            f"{text!r} is not a backup id: give its UUID, or the first characters of it (at least 4), as "
            "`tenant-backup list` shows them"
        )
    return text.lower()


def slug(text: str, limit: int = 40) -> str:
    """Lower-case ASCII words joined by dashes: ``Maquis Étoile, Yaoundé`` -> ``maquis-etoile-yaounde``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")


def short_id(tenant_id: str) -> str:
    """The first 8 characters of a UUID (as git shows commits); other ids slugged, whole."""
    if re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}", tenant_id):
        return tenant_id[:8].lower()
    return slug(tenant_id, 24) or "tenant"


def tenant_label(tenant_id: str, tenant_name: str | None) -> str:
    """``<slugged name>-<short id>``, or the short id alone when the tenant has no name."""
    name = slug(tenant_name or "")
    return f"{name}-{short_id(tenant_id)}" if name else short_id(tenant_id)


def tenant_tags(tenant_id: str, tenant_name: str | None) -> list[str]:
    """Tags that find a tenant's runs in the Prefect UI: ``tenant:8b42958c``, ``tenant-name:le-wouri``."""
    return [f"tenant:{short_id(tenant_id)}", *([f"tenant-name:{slug(tenant_name)}"] if tenant_name else [])]
