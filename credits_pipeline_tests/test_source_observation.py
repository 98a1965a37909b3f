"""The source tables are observed: their row counts and newest rows, as the source holds them.

The `--anomalies` demo is written to a fresh SQLite file, MariaDB database and PostgreSQL database
(it holds a NULL and a future `created_at`, the hard cases for "newest"); the real observation job
runs through Dagster, and every table's observed row count must be the number of rows the demo
wrote and its newest `created_at` the largest value read back row by row from the source. The
observation carries nothing else (no personal data), its data version moves only with the table,
a missing table fails the step by name while the others are still observed, and the code location
observes on a schedule before the daily run.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline.extract.observe import (
    NEWEST_CREATED_AT_METADATA,
    OBSERVE_CRON,
    OBSERVE_JOB_NAME,
    OBSERVE_SCHEDULE_NAME,
    ROW_COUNT_METADATA,
    observe_job,
    source_observation,
)
from credits_pipeline.names import source_key
from credits_pipeline.schedules import DAILY_CRON
from credits_pipeline.source.demo import generate
from credits_pipeline.source.reader import SourceDatabase
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES
from credits_pipeline_tests.harness import code_location_definitions

DEMO_USERS = 60  # enough for every injected anomaly
DEMO_MONTHS = 6  # the --anomalies demo needs six months
DEMO_SEED = 5


def _observe(url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=[source_observation],
        jobs=[observe_job],
        resources={"source": SourceDatabase(url=url)},
        executor=dg.in_process_executor,
    )
    return defs.resolve_job_def(OBSERVE_JOB_NAME).execute_in_process(
        instance=instance, raise_on_error=False
    )


def _observations(instance: dg.DagsterInstance) -> dict[str, dg.AssetObservation]:
    found = {}
    for table in TABLES:
        records = instance.fetch_observations(source_key(table.name), limit=1).records
        if records:
            found[table.name] = records[0].asset_observation
    return found


def _as_datetime(value) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def _newest_created_at_row_by_row(url: str, table: str) -> dt.datetime | None:
    """The largest `created_at`, read back value by value (not with the observation's SQL)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if "mysql" in url:
                conn.exec_driver_sql("SET time_zone = '+00:00'")
            values = conn.execute(sa.text(f"select created_at from {table}")).scalars().all()
    finally:
        engine.dispose()
    dated = [_as_datetime(v) for v in values if v is not None]
    return max(dated) if dated else None


def _assert_observed_as_the_source_holds(url: str) -> None:
    written = generate(url, users=DEMO_USERS, seed=DEMO_SEED, months=DEMO_MONTHS, anomalies=True)
    with dg.instance_for_test() as instance:
        result = _observe(url, instance)
        assert result.success
        observed = _observations(instance)
    assert set(observed) == {t.name for t in TABLES}
    assert written.counts[CREDIT_HISTORIES.name] > 0  # the ledger: not a comparison of empty tables
    for table in TABLES:
        observation = observed[table.name]
        assert observation.metadata[ROW_COUNT_METADATA].value == written.counts[table.name], (
            table.name
        )
        newest = _newest_created_at_row_by_row(url, table.name)
        if newest is None:
            assert NEWEST_CREATED_AT_METADATA not in observation.metadata, table.name
            continue
        seen = dt.datetime.fromtimestamp(
            observation.metadata[NEWEST_CREATED_AT_METADATA].value, dt.UTC
        ).replace(tzinfo=None)
        assert abs((seen - newest).total_seconds()) < 1e-3, (table.name, seen, newest)
        # nothing else leaves the source: no row, no name, no e-mail
        assert set(observation.metadata) == {ROW_COUNT_METADATA, NEWEST_CREATED_AT_METADATA}
        assert observation.tags["dagster/data_version"] == (
            f"rows={written.counts[table.name]};created_at={newest.isoformat(sep=' ')}"
        )


def test_the_sqlite_demos_tables_are_observed_with_their_own_row_counts_and_newest_rows(
    fresh_sqlite_url,
):
    _assert_observed_as_the_source_holds(fresh_sqlite_url)


@pytest.mark.mysql
def test_the_mariadb_demos_tables_are_observed_with_their_own_row_counts_and_newest_rows(
    fresh_mysql_url,
):
    _assert_observed_as_the_source_holds(fresh_mysql_url)


@pytest.mark.postgres
def test_the_postgresql_demos_tables_are_observed_with_their_own_row_counts_and_newest_rows(
    fresh_postgres_url,
):
    _assert_observed_as_the_source_holds(fresh_postgres_url)


def test_a_tables_data_version_moves_only_when_its_rows_do(fresh_sqlite_url):
    generate(fresh_sqlite_url, users=20, seed=DEMO_SEED, months=1)
    engine = sa.create_engine(fresh_sqlite_url)
    with dg.instance_for_test() as instance:
        assert _observe(fresh_sqlite_url, instance).success
        before = {t: o.tags["dagster/data_version"] for t, o in _observations(instance).items()}
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "insert into captions (id, user_id, model_type, model_id, provider, "
                    "created_at, updated_at) values (:id, 1, 'video', 1, 'x', :at, :at)"
                ),
                {"id": 10**9, "at": dt.datetime(2030, 1, 1, 12)},
            )
        assert _observe(fresh_sqlite_url, instance).success
        after = {t: o.tags["dagster/data_version"] for t, o in _observations(instance).items()}
    engine.dispose()
    changed = {t for t in before if before[t] != after[t]}
    assert changed == {"captions"}
    assert after["captions"].endswith("created_at=2030-01-01 12:00:00")


def test_a_missing_table_fails_the_observation_by_name_and_the_others_are_still_observed(
    fresh_sqlite_url,
):
    generate(fresh_sqlite_url, users=20, seed=DEMO_SEED, months=1)
    engine = sa.create_engine(fresh_sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("drop table plans"))
    engine.dispose()
    with dg.instance_for_test() as instance:
        result = _observe(fresh_sqlite_url, instance)
        observed = _observations(instance)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.user_failure_data.description == (
        "syllaby_v2.plans: the table does not exist in the source database"
    )
    assert set(observed) == {t.name for t in TABLES} - {"plans"}


def test_the_code_location_observes_the_source_ten_minutes_before_the_daily_run(monkeypatch):
    defs = code_location_definitions(monkeypatch)
    graph = defs.resolve_asset_graph()
    for table in TABLES:
        node = graph.get(source_key(table.name))
        assert node.is_observable and not node.is_materializable, table.name
    job = defs.resolve_job_def(OBSERVE_JOB_NAME)
    assert job.asset_layer.executable_asset_keys == {source_key(t.name) for t in TABLES}
    schedule = defs.resolve_schedule_def(OBSERVE_SCHEDULE_NAME)
    assert schedule.job_name == OBSERVE_JOB_NAME and schedule.execution_timezone == "UTC"
    observe_minute, observe_hour = (int(x) for x in OBSERVE_CRON.split()[:2])
    daily_minute, daily_hour = (int(x) for x in DAILY_CRON.split()[:2])
    assert schedule.cron_schedule == OBSERVE_CRON
    assert (daily_hour * 60 + daily_minute) - (observe_hour * 60 + observe_minute) == 10
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
