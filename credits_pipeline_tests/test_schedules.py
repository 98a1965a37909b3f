"""The daily job, its 03:00 UTC schedule, freshness policies and the ledger lag check."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from credits_pipeline.extract.lag import ledger_lag
from credits_pipeline.schedules import (
    DAILY_CRON,
    DAILY_JOB_NAME,
    DAILY_SCHEDULE_NAME,
    FRESHNESS_FAIL_WINDOW,
    previous_partition_key,
)
from credits_pipeline_tests.harness import code_location_definitions


@pytest.fixture
def defs(monkeypatch) -> dg.Definitions:
    return code_location_definitions(monkeypatch)


def test_the_schedule_runs_at_three_utc_for_the_previous_utc_day(defs):
    schedule = defs.resolve_schedule_def(DAILY_SCHEDULE_NAME)
    assert schedule.cron_schedule == DAILY_CRON == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC),
        repository_def=defs.get_repository_def(),
    )
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-02-28"


def test_a_scheduled_time_given_in_another_zone_is_read_in_utc():
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert (
        previous_partition_key(dt.datetime(2026, 3, 1, 12, 30, tzinfo=tokyo)) == "2026-02-28"
    )  # 03:30 UTC
    assert (
        previous_partition_key(dt.datetime(2026, 3, 1, 8, 30, tzinfo=tokyo)) == "2026-02-27"
    )  # 23:30 UTC


def test_the_daily_job_covers_extraction_and_is_partitioned_by_ledger_day(defs):
    job = defs.resolve_job_def(DAILY_JOB_NAME)
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"raw/credit_histories", "raw/users", "raw/credit_histories__open", "raw/plans"} <= keys
    assert not any(k.startswith("syllaby_v2/") for k in keys)
    assert job.partitions_def is not None


def test_the_raw_ledger_and_every_mart_carry_a_26_hour_freshness_policy(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        expected = key.path[0] == "marts" or key.to_user_string() == "raw/credit_histories"
        policy = node.freshness_policy
        if expected:
            assert (
                policy is not None and policy.fail_window.to_timedelta() == FRESHNESS_FAIL_WINDOW
            ), key
        elif key.path[0] == "raw":
            assert policy is None, key


def test_ledger_lag_is_zero_when_level_and_measured_when_behind():
    now = dt.datetime(2026, 1, 2, 3)
    assert ledger_lag(now, now) == dt.timedelta(0)
    assert ledger_lag(now, now - dt.timedelta(hours=30)) == dt.timedelta(hours=30)
    assert ledger_lag(None, None) is None
    assert ledger_lag(now, None) == dt.timedelta.max
