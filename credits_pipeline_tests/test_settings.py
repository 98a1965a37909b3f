"""The configuration check: every variable settings.py reads, a line per bad value, no demo."""

from __future__ import annotations

import datetime as dt

import pytest

from credits_pipeline import settings

TODAY = dt.date(2026, 3, 10)
VALID = {settings.SOURCE_URL_VAR: "mysql+pymysql://reader:s3cret@db.internal:3306/syllaby_v2"}

# (variable, bad value, a fragment of what is allowed): every variable settings.py validates
BAD_VALUES = [
    (settings.LEDGER_RECHECK_DAYS_VAR, "-1", "a whole number of days, 0 or more"),
    (settings.LEDGER_FULL_CHECK_DAYS_VAR, "weekly", "a whole number of days, 0 or more"),
    (settings.SOURCE_URL_VAR, "oracle://db/syllaby_v2", "SQLAlchemy URL"),
    (settings.SOURCE_URL_VAR, "mysql+pymysql://u:pw@host:notaport/db", "SQLAlchemy URL"),
    (settings.SOURCE_URL_VAR, "postgresql+psycopg://u@host", "must name a database"),
    (settings.WAREHOUSE_VAR, "bogus", "'duckdb' or 'bigquery'"),
    (settings.LEDGER_START_DATE_VAR, "2025-02-30", "YYYY-MM-DD"),
    (settings.LEDGER_START_DATE_VAR, "2026-03-11", "not after today"),
    (settings.UI_BASE_URL_VAR, "localhost:3000", "http://"),
    (settings.BLOCK_REVENUE_ON_ERROR_VAR, "maybe", "true"),
    (settings.CUTOFF_AT_VAR, "yesterday", "ISO timestamp"),
    (settings.DEMO_USERS_VAR, "many", "positive whole number"),
    (settings.DEMO_USERS_VAR, "0", "positive whole number"),
    (settings.DUCKDB_MEMORY_LIMIT_VAR, "lots", "4GB"),
    (settings.DUCKDB_MEMORY_LIMIT_VAR, "80%", "4GB"),
    (settings.REPLAY_VAR, "fast", "resume, full"),
    (settings.REPLAY_BATCH_ROWS_VAR, "-3", "positive whole number"),
]


def test_a_complete_environment_has_no_problem():
    env = {
        **VALID,
        settings.WAREHOUSE_VAR: "BigQuery",
        settings.LEDGER_START_DATE_VAR: "2025-01-01",
        settings.UI_BASE_URL_VAR: "https://dagster.example.com/",
        settings.BLOCK_REVENUE_ON_ERROR_VAR: "yes",
        settings.CUTOFF_AT_VAR: "2026-03-01T02:00:00Z",
        settings.DEMO_USERS_VAR: "1_000",
        settings.DUCKDB_MEMORY_LIMIT_VAR: "4GB",
        settings.REPLAY_VAR: "full",
        settings.REPLAY_BATCH_ROWS_VAR: "500000",
        settings.LEDGER_RECHECK_DAYS_VAR: "0",
        settings.LEDGER_FULL_CHECK_DAYS_VAR: "1_0",
    }
    assert settings.configuration_problems(env, today=TODAY) == []


@pytest.mark.parametrize(("var", "value", "allowed"), BAD_VALUES)
def test_each_bad_variable_gives_one_line_naming_it_and_what_is_allowed(var, value, allowed):
    problems = settings.configuration_problems({**VALID, var: value}, today=TODAY)
    assert len(problems) == 1, problems
    [line] = problems
    assert line.startswith(var) and "\n" not in line
    assert allowed in line


def test_a_bad_url_never_shows_its_password():
    env = {settings.SOURCE_URL_VAR: "oracle://reader:hunter2@db/syllaby_v2"}
    unparseable = {settings.SOURCE_URL_VAR: "mysql+pymysql://reader:hunter2@db:port/x"}
    for problems in (
        settings.configuration_problems(env),
        settings.configuration_problems(unparseable),
    ):
        assert problems and not any("hunter2" in p for p in problems)


def test_several_bad_variables_are_all_reported_at_once():
    env = {settings.WAREHOUSE_VAR: "bogus", settings.REPLAY_VAR: "fast"}
    problems = settings.configuration_problems(env, today=TODAY)
    assert [p.split("=")[0].split(" ")[0] for p in problems] == [
        settings.SOURCE_URL_VAR,
        settings.WAREHOUSE_VAR,
        settings.REPLAY_VAR,
    ]


def test_without_a_source_url_there_is_no_silent_demo(monkeypatch):
    monkeypatch.delenv(settings.SOURCE_URL_VAR, raising=False)
    [problem] = settings.configuration_problems({}, today=TODAY)
    assert problem.startswith(f"{settings.SOURCE_URL_VAR} is not set") and "'demo'" in problem
    with pytest.raises(settings.ConfigurationError, match=settings.SOURCE_URL_VAR):
        settings.source_url()
    assert not settings.source_url_is_default()
    assert settings.configured_source_url() is None


def test_the_demo_is_chosen_explicitly_and_resolves_to_the_embedded_sqlite_file(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(settings.SOURCE_URL_VAR, settings.DEMO_SOURCE)
    monkeypatch.setenv(settings.DATA_DIR_VAR, str(tmp_path))
    assert settings.source_url_is_default()
    assert settings.source_url() == f"sqlite:///{tmp_path / 'syllaby_v2_demo.sqlite'}"


def test_the_getters_refuse_what_the_check_refuses(monkeypatch):
    monkeypatch.setenv(settings.LEDGER_START_DATE_VAR, "2025-13-01")
    with pytest.raises(settings.ConfigurationError, match=settings.LEDGER_START_DATE_VAR):
        settings.ledger_start_date()
    monkeypatch.setenv(settings.REPLAY_VAR, "fast")
    with pytest.raises(ValueError, match=settings.REPLAY_VAR):
        settings.replay_forced_full()
    monkeypatch.setenv(settings.CUTOFF_AT_VAR, "2026-03-01T02:00:00+01:00")
    assert settings.pinned_cutoff() == dt.datetime(2026, 3, 1, 1, 0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2026-13-45", "is not valid"),
        ("yesterday", "is not valid"),
        ("2026-03-10", "in the future"),
        ("2030-01-01", "in the future"),
        ("2024-12-31", "before the ledger start"),
    ],
)
def test_a_partition_must_be_a_closed_day_between_the_ledger_start_and_yesterday(value, fragment):
    problem = settings.partition_problem(value, dt.date(2025, 1, 1), TODAY - dt.timedelta(days=1))
    assert (
        problem is not None and problem.startswith(f"--partition {value!r}") and fragment in problem
    )
    assert "2025-01-01" in problem and "2026-03-09" in problem


def test_a_closed_day_is_a_valid_partition():
    assert (
        settings.partition_problem("2026-03-09", dt.date(2025, 1, 1), dt.date(2026, 3, 9)) is None
    )
    assert (
        settings.partition_problem("2025-01-01", dt.date(2025, 1, 1), dt.date(2026, 3, 9)) is None
    )
