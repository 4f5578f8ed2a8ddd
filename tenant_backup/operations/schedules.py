"""The app's ``backup_schedules`` rows as Prefect cron schedules (pure functions, plus the SQL
that reads and stamps the rows).

Validation follows seed 000's ``backupScheduleSchema``: ``daily`` / ``weekly`` (``jour_semaine``
0..6, 0 = Sunday as in JavaScript's ``getDay()`` and cron) / ``monthly`` (``jour_mois`` 1..31),
``heure_execution`` ``HH:MM``, ``retention_jours`` 1..365, ``type`` full / partial, or
``incremental`` (seed 000's backup type: the changes since the tenant's newest backup, and a full
one each ``TENANT_BACKUP_CHAIN_DAYS``, 7 by default: a daily row is a weekly full plus daily
incrementals). Nothing finer
than daily exists. A monthly day past the end of a month runs on that month's last day (31 →
30 April, 28 or 29 February), which takes two crons for days 29 and 30 (``L`` is cron's last
day). Times are wall-clock times in the configured time zone: on the day clocks go forward, a
time inside the gap runs when the gap ends (02:30 → 03:30); when they go back, it runs once.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CronSpec",
    "InvalidSchedule",
    "ScheduleRow",
    "SyncChange",
    "SyncReport",
    "WantedSchedule",
    "cron_specs",
    "next_run",
    "next_runs",
    "read_schedules",
    "schedule_parameters",
    "stamp",
    "wanted_schedules",
]

SLUG_PREFIX = "backup-schedule-"
UTC = ZoneInfo("UTC")


class ScheduleRow(BaseModel):
    """One row of ``backup_schedules``, validated."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    nom: str = Field(min_length=2, max_length=100)
    actif: bool = True
    frequence: Literal["daily", "weekly", "monthly"]
    heure_execution: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")
    jour_semaine: int | None = Field(None, ge=0, le=6, description="0 = Sunday")
    jour_mois: int | None = Field(None, ge=1, le=31)
    type: Literal["full", "partial", "incremental"] = "full"
    categories: list[str] = Field(default_factory=list)
    retention_jours: int = Field(30, ge=1, le=365)
    format: Literal["csv", "json", "sql"] = "csv"

    @field_validator("heure_execution", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, time):
            if value.second or value.microsecond:
                raise ValueError(f"must be HH:MM, whole minutes (got {value.isoformat()})")
            return value.strftime("%H:%M")
        return value

    @model_validator(mode="after")
    def _day(self) -> ScheduleRow:
        if self.frequence == "weekly" and self.jour_semaine is None:
            raise ValueError("a weekly schedule needs jour_semaine (0 = Sunday .. 6 = Saturday)")
        if self.frequence == "monthly" and self.jour_mois is None:
            raise ValueError("a monthly schedule needs jour_mois (1..31)")
        if self.type == "partial" and not self.categories:
            raise ValueError("a partial backup needs at least one category")
        return self

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = self.heure_execution.split(":")
        return int(hour), int(minute)


class InvalidSchedule(BaseModel):
    id: str
    tenant_id: str | None
    nom: str | None
    error: str


class SyncChange(BaseModel):
    slug: str
    action: Literal["created", "updated", "removed", "unchanged"]
    cron: str | None = None
    tenant_id: str | None = None
    next_run: datetime | None = None


class SyncReport(BaseModel):
    deployment: str
    timezone: str
    changes: list[SyncChange]
    invalid: list[InvalidSchedule]

    @property
    def changed(self) -> int:
        return sum(c.action != "unchanged" for c in self.changes)


class CronSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    slug: str
    cron: str


def cron_specs(row: ScheduleRow) -> list[CronSpec]:
    """The crons that run ``row``: one, or two for monthly days 29 and 30."""
    hour, minute = row.hour_minute
    slug = f"{SLUG_PREFIX}{row.id}"
    if row.frequence == "daily":
        return [CronSpec(slug=slug, cron=f"{minute} {hour} * * *")]
    if row.frequence == "weekly":
        return [CronSpec(slug=slug, cron=f"{minute} {hour} * * {row.jour_semaine}")]
    day = row.jour_mois or 1
    if day <= 28:
        return [CronSpec(slug=slug, cron=f"{minute} {hour} {day} * *")]
    if day == 31:
        return [CronSpec(slug=slug, cron=f"{minute} {hour} L * *")]
    # 29, 30: that day in every month but February, February's last day (28 or 29).
    return [
        CronSpec(slug=slug, cron=f"{minute} {hour} {day} 1,3-12 *"),
        CronSpec(slug=f"{slug}-february", cron=f"{minute} {hour} L 2 *"),
    ]


class WantedSchedule(BaseModel):
    """One deployment schedule that a row asks for."""

    model_config = ConfigDict(frozen=True)

    slug: str
    cron: str
    parameters: dict[str, Any]
    row: ScheduleRow


def schedule_parameters(row: ScheduleRow, profile: str | None) -> dict[str, Any]:
    """The backup-tenant parameters of a scheduled run of ``row``."""
    return {
        "tenant_id": row.tenant_id,
        "categories": row.categories if row.type == "partial" else None,
        "format": row.format,
        "backup_type": "scheduled",
        **({"kind": "incremental"} if row.type == "incremental" else {}),
        "schedule_id": row.id,
        "name": row.nom,
        **({"profile": profile} if profile else {}),
    }


def wanted_schedules(rows: list[ScheduleRow], profile: str | None) -> dict[str, WantedSchedule]:
    """Every schedule the active rows ask for, by slug."""
    return {
        spec.slug: WantedSchedule(slug=spec.slug, cron=spec.cron, parameters=schedule_parameters(row, profile), row=row)
        for row in rows
        if row.actif
        for spec in cron_specs(row)
    }


def next_runs(
    rows: list[ScheduleRow], invalid: list[InvalidSchedule], now: datetime, timezone: str
) -> dict[str, datetime | None]:
    """``prochaine_execution`` of every row: none for inactive and invalid rows."""
    runs: dict[str, datetime | None] = {bad.id: None for bad in invalid}
    runs.update({row.id: next_run(row, now, timezone) if row.actif else None for row in rows})
    return runs


def _last_day(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def _wall(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    """``day hour:minute`` in ``zone``, as Prefect's cron schedules place it: an ambiguous time
    (clocks going back) is its first occurrence; a time inside a DST gap takes the offset after
    the gap, which lands one hour before it (02:30 → 01:30 on the day clocks go forward)."""
    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment.replace(tzinfo=None):
        moment = moment.replace(fold=1)
    return moment


def next_run(row: ScheduleRow, after: datetime, timezone: str) -> datetime:
    """The first run of ``row`` strictly after ``after`` (aware), in UTC."""
    zone = ZoneInfo(timezone)
    hour, minute = row.hour_minute
    day = after.astimezone(zone).date() - timedelta(days=1)
    for _ in range(800):
        day += timedelta(days=1)
        if row.frequence == "weekly" and (day.weekday() + 1) % 7 != row.jour_semaine:
            continue
        if row.frequence == "monthly" and day.day != min(row.jour_mois or 1, _last_day(day.year, day.month)):
            continue
        moment = _wall(day, hour, minute, zone)
        if moment > after:
            return moment.astimezone(UTC)
    raise AssertionError("unreachable: every schedule runs at least once a month")


def _t(schema: str) -> sql.Composed:
    return sql.SQL("{}.backup_schedules").format(sql.Identifier(schema))


def read_schedules(
    conn: psycopg.Connection, schema: str, schedule_id: str | None = None
) -> tuple[list[ScheduleRow], list[InvalidSchedule]]:
    """Every row (or the one ``schedule_id``), validated; a row that fails validation is returned
    apart, with why."""
    valid: list[ScheduleRow] = []
    invalid: list[InvalidSchedule] = []
    query = sql.SQL(
        "SELECT id::text AS id, tenant_id, nom, actif, frequence, heure_execution, jour_semaine, jour_mois, type, "
        "categories, retention_jours, format FROM {} AS s WHERE %(id)s::uuid IS NULL OR s.id = %(id)s::uuid "
        "ORDER BY s.created_at, s.id"
    ).format(_t(schema))
    with conn.cursor(row_factory=dict_row) as cur:
        for raw in cur.execute(query, {"id": schedule_id}):
            try:
                valid.append(ScheduleRow.model_validate(raw))
            except ValidationError as exc:
                reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
                invalid.append(
                    InvalidSchedule(id=raw["id"], tenant_id=raw.get("tenant_id"), nom=raw.get("nom"), error=reasons)
                )
    return valid, invalid


def stamp(conn: psycopg.Connection, schema: str, next_runs: dict[str, datetime | None]) -> None:
    """Write ``prochaine_execution`` where it changed."""
    for schedule_id, moment in next_runs.items():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET prochaine_execution = %s WHERE id = %s AND prochaine_execution IS DISTINCT FROM %s"
            ).format(_t(schema)),
            (moment, schedule_id, moment),
        )


def mark_ran(conn: psycopg.Connection, schema: str, schedule_id: str, at: datetime, following: datetime | None) -> None:
    """A scheduled run started: ``derniere_execution``, and the next one."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET derniere_execution = %s, prochaine_execution = coalesce(%s, prochaine_execution) "
            "WHERE id = %s"
        ).format(_t(schema)),
        (at, following, schedule_id),
    )
