"""backup_schedules rows as cron schedules: validation, crons, next runs (month ends, DST)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tenant_backup.operations.schedules import ScheduleRow, cron_specs, next_run, schedule_parameters


def row(**fields: object) -> ScheduleRow:
    return ScheduleRow.model_validate({"id": "s1", "tenant_id": "t1", "nom": "nightly", **fields})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frequence": "weekly", "heure_execution": "02:00"}, "jour_semaine"),
        ({"frequence": "monthly", "heure_execution": "02:00"}, "jour_mois"),
        ({"frequence": "monthly", "heure_execution": "02:00", "jour_mois": 32}, "less than or equal to 31"),
        ({"frequence": "weekly", "heure_execution": "02:00", "jour_semaine": 7}, "less than or equal to 6"),
        ({"frequence": "daily", "heure_execution": "24:00"}, "pattern"),
        ({"frequence": "daily", "heure_execution": "2:00"}, "pattern"),
        ({"frequence": "hourly", "heure_execution": "02:00"}, "daily"),
        ({"frequence": "daily", "heure_execution": "02:00", "retention_jours": 0}, "greater than or equal to 1"),
        ({"frequence": "daily", "heure_execution": "02:00", "retention_jours": 366}, "less than or equal to 365"),
        ({"frequence": "daily", "heure_execution": "02:00", "type": "partial"}, "category"),
    ],
)
def test_rows_are_validated_like_seed_000s_backup_schedule_schema(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        row(**fields)


def test_crons_for_each_frequency_and_month_end() -> None:
    assert [c.cron for c in cron_specs(row(frequence="daily", heure_execution="02:30"))] == ["30 2 * * *"]
    weekly = row(frequence="weekly", heure_execution="23:05", jour_semaine=0)
    assert [c.cron for c in cron_specs(weekly)] == ["5 23 * * 0"]
    assert [c.cron for c in cron_specs(row(frequence="monthly", heure_execution="03:00", jour_mois=15))] == [
        "0 3 15 * *"
    ]
    assert [c.cron for c in cron_specs(row(frequence="monthly", heure_execution="03:00", jour_mois=31))] == [
        "0 3 L * *"
    ]
    thirtieth = cron_specs(row(frequence="monthly", heure_execution="03:00", jour_mois=30))
    assert [(c.slug, c.cron) for c in thirtieth] == [
        ("backup-schedule-s1", "0 3 30 1,3-12 *"),
        ("backup-schedule-s1-february", "0 3 L 2 *"),
    ]


@pytest.mark.parametrize(
    ("fields", "zone", "after", "expected"),
    [
        # daily, weekly (0 = Sunday)
        (
            {"frequence": "daily", "heure_execution": "02:00"},
            "UTC",
            "2026-11-22T02:00:00+00:00",
            "2026-11-23T02:00:00+00:00",
        ),
        (
            {"frequence": "weekly", "heure_execution": "09:15", "jour_semaine": 0},
            "Europe/Paris",
            "2026-11-22T12:00:00+00:00",
            "2026-11-29T09:15:00+01:00",
        ),
        # day 31: the last day of short months, February of common and leap years
        (
            {"frequence": "monthly", "heure_execution": "03:00", "jour_mois": 31},
            "Europe/Paris",
            "2027-02-01T00:00:00+00:00",
            "2027-02-28T03:00:00+01:00",
        ),
        (
            {"frequence": "monthly", "heure_execution": "03:00", "jour_mois": 31},
            "Europe/Paris",
            "2028-02-01T00:00:00+00:00",
            "2028-02-29T03:00:00+01:00",
        ),
        (
            {"frequence": "monthly", "heure_execution": "03:00", "jour_mois": 31},
            "Europe/Paris",
            "2026-04-01T00:00:00+00:00",
            "2026-04-30T03:00:00+02:00",
        ),
        (
            {"frequence": "monthly", "heure_execution": "03:00", "jour_mois": 30},
            "UTC",
            "2027-02-01T00:00:00+00:00",
            "2027-02-28T03:00:00+00:00",
        ),
        (
            {"frequence": "monthly", "heure_execution": "03:00", "jour_mois": 30},
            "UTC",
            "2027-02-28T03:00:00+00:00",
            "2027-03-30T03:00:00+00:00",
        ),
        # DST: Paris goes forward on 2026-03-29 (02:00 -> 03:00) and back on 2026-10-25 (03:00 -> 02:00)
        (
            {"frequence": "daily", "heure_execution": "02:30"},
            "Europe/Paris",
            "2026-03-28T12:00:00+00:00",
            "2026-03-29T00:30:00+00:00",
        ),
        (
            {"frequence": "daily", "heure_execution": "02:30"},
            "Europe/Paris",
            "2026-03-29T12:00:00+00:00",
            "2026-03-30T02:30:00+02:00",
        ),
        (
            {"frequence": "daily", "heure_execution": "02:30"},
            "Europe/Paris",
            "2026-10-24T12:00:00+00:00",
            "2026-10-25T02:30:00+02:00",
        ),
        (
            {"frequence": "daily", "heure_execution": "02:30"},
            "Europe/Paris",
            "2026-10-25T00:30:00+00:00",
            "2026-10-26T02:30:00+01:00",
        ),
        (
            {"frequence": "daily", "heure_execution": "04:00"},
            "Europe/Paris",
            "2026-03-28T12:00:00+00:00",
            "2026-03-29T04:00:00+02:00",
        ),
        (
            {"frequence": "daily", "heure_execution": "01:00"},
            "America/New_York",
            "2026-03-08T00:00:00+00:00",
            "2026-03-08T01:00:00-05:00",
        ),
    ],
)
def test_next_run_is_right(fields: dict[str, object], zone: str, after: str, expected: str) -> None:
    assert next_run(row(**fields), at(after), zone) == at(expected)


def test_next_runs_agree_with_prefects_own_cron_schedules() -> None:
    """What we write to prochaine_execution is when Prefect will run it, a year of runs long."""
    from prefect.server.schemas.schedules import CronSchedule

    def prefect_next(cron: str, zone: str, after: datetime) -> datetime:
        dates = asyncio.run(CronSchedule(cron=cron, timezone=zone).get_dates(n=2, start=after + timedelta(seconds=1)))
        # Prefect 3.8 may yield the DST-gap day's run again after it has passed: skip what is not after.
        return min(datetime.fromtimestamp(d.timestamp(), UTC) for d in dates if d.timestamp() > after.timestamp())

    cases = [
        {"frequence": "daily", "heure_execution": "02:30"},
        {"frequence": "weekly", "heure_execution": "02:30", "jour_semaine": 0},
        {"frequence": "monthly", "heure_execution": "02:30", "jour_mois": 29},
        {"frequence": "monthly", "heure_execution": "23:45", "jour_mois": 30},
        {"frequence": "monthly", "heure_execution": "00:00", "jour_mois": 31},
    ]
    for zone in ("Europe/Paris", "America/New_York", "Australia/Sydney"):
        for fields in cases:
            schedule = row(**fields)
            # Around both DST changes of each hemisphere, and over a year for the monthly ones.
            for start in ((1, 1),) if fields["frequence"] == "monthly" else ((3, 1), (3, 25), (9, 28), (10, 20)):
                moment = datetime(2026, *start, tzinfo=UTC)
                for _ in range(14):
                    ours = next_run(schedule, moment, zone)
                    theirs = min(prefect_next(spec.cron, zone, moment) for spec in cron_specs(schedule))
                    assert ours == theirs, (zone, fields, moment)
                    moment = ours


def test_a_daily_incremental_row_runs_incremental_backups_and_a_full_one_per_chain() -> None:
    parameters = schedule_parameters(row(frequence="daily", heure_execution="02:00", type="incremental"), "pos")
    assert parameters["kind"] == "incremental" and parameters["categories"] is None
    assert "kind" not in schedule_parameters(row(frequence="daily", heure_execution="02:00"), "pos")
