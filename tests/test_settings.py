"""A bad setting is a ConfigurationError that names the variable and what it expects, before
anything runs (never "a bug", never PostgreSQL's refusal halfway)."""

from __future__ import annotations

import pytest

from tenant_backup.errors import ConfigurationError
from tenant_backup.settings import get_settings


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TENANT_BACKUP_CHAIN_DAYS", "0", "input should be greater than 0"),
        ("TENANT_BACKUP_LOCK_TIMEOUT", "", "expected a PostgreSQL duration such as 10s"),
        ("TENANT_BACKUP_LOCK_TIMEOUT", "soon", "expected a PostgreSQL duration such as 10s"),
        ("TENANT_BACKUP_WORK_MEM", "lots", "expected a PostgreSQL size such as 256MB"),
        ("TENANT_BACKUP_SLOTS", "x", "input should be a valid integer"),
        ("TENANT_BACKUP_MAX_WORKERS", "0", "input should be greater than or equal to 1"),
    ],
)
def test_a_bad_setting_is_a_configuration_error_naming_the_variable_and_what_it_expects(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=f"{variable}='{value}': {says}"):
        get_settings()


@pytest.mark.parametrize(("lock_timeout", "work_mem"), [("10s", "256MB"), ("500ms", "1GB"), ("2min", "65536")])
def test_durations_and_sizes_as_postgresql_writes_them_are_accepted(
    monkeypatch: pytest.MonkeyPatch, lock_timeout: str, work_mem: str
) -> None:
    monkeypatch.setenv("TENANT_BACKUP_LOCK_TIMEOUT", lock_timeout)
    monkeypatch.setenv("TENANT_BACKUP_WORK_MEM", work_mem)
    settings = get_settings()
    assert (settings.lock_timeout, settings.work_mem) == (lock_timeout, work_mem)
