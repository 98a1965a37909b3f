"""The dbt steps rebuild their incremental models only when the replay holds vanished rows."""

import datetime as dt

import duckdb
import pytest

from credits_pipeline.transform.replay_rebuild import (
    DAILY_MART_RELATION,
    REPLAY_LOG_RELATION,
    REPLAY_RELATION,
    daily_mart_must_rebuild,
    days_with_vanished_rows,
    replay_must_rebuild,
    replay_rebuild_reason,
)
from credits_pipeline_tests.bigquery_emulator import bigquery_emulator  # noqa: F401

RUN_1 = dt.datetime(2025, 4, 1, 3, 5)
RUN_2 = dt.datetime(2025, 4, 2, 3, 5)


@pytest.fixture
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for schema in ("raw", "credits", "marts"):
        con.execute(f"create schema {schema}")
    con.execute("create or replace table raw.credit_histories (id bigint, _partition date)")
    con.execute("create or replace table raw.credit_histories__open (id bigint)")
    yield con
    con.close()


def _ledger(con, closed: list[int], open_ids: list[int]) -> None:
    for i in closed:
        con.execute("insert into raw.credit_histories values (?, date '2025-03-01')", [i])
    for i in open_ids:
        con.execute("insert into raw.credit_histories__open values (?)", [i])


def _replay(con, rows: list[tuple[int, dt.date]]) -> None:
    con.execute(
        f"create table {REPLAY_RELATION} (credit_history_id bigint, balance_date date, "
        "replayed_at timestamp)"
    )
    for i, day in rows:
        con.execute(f"insert into {REPLAY_RELATION} values (?, ?, ?)", [i, day, RUN_1])


def test_before_the_first_build_nothing_forces_a_rebuild(con):
    _ledger(con, [1, 2], [3])
    assert days_with_vanished_rows(con) == []
    assert replay_must_rebuild(con) is None
    assert daily_mart_must_rebuild(con) is None


def test_a_replay_whose_rows_are_all_in_the_ledger_resumes(con):
    _ledger(con, [1, 2], [3])
    _replay(con, [(1, dt.date(2025, 3, 1)), (2, dt.date(2025, 3, 1)), (3, dt.date(2025, 3, 2))])
    assert replay_must_rebuild(con) is None


def test_rows_gone_from_closed_days_or_the_open_slice_name_their_days(con):
    _ledger(con, [1], [4])
    _replay(
        con,
        [
            (1, dt.date(2025, 3, 1)),
            (2, dt.date(2025, 3, 9)),  # deleted from a closed day
            (3, dt.date(2025, 3, 2)),  # deleted from the open slice (or quarantined)
            (5, dt.date(2025, 3, 9)),
            (4, dt.date(2025, 3, 3)),
        ],
    )
    assert days_with_vanished_rows(con) == [dt.date(2025, 3, 2), dt.date(2025, 3, 9)]
    reason = replay_must_rebuild(con)
    assert reason is not None and "on 2 day(s) (2025-03-02, 2025-03-09)" in reason


def test_the_reason_shows_five_days_at_most():
    days = [dt.date(2025, 3, d) for d in range(1, 8)]
    reason = replay_rebuild_reason(days)
    assert reason is not None and "on 7 day(s) (2025-03-01, 2025-03-02, 2025-03-03, " in reason
    assert "2025-03-05 …)" in reason and "2025-03-06" not in reason
    assert replay_rebuild_reason([]) is None


def _log_and_mart(con, log_runs: list[dt.datetime], mart_watermark: dt.datetime) -> None:
    con.execute(f"create table {REPLAY_LOG_RELATION} (replayed_at timestamp)")
    con.execute(f"create table {DAILY_MART_RELATION} (replayed_at timestamp)")
    for at in log_runs:
        con.execute(f"insert into {REPLAY_LOG_RELATION} values (?)", [at])
    con.execute(f"insert into {DAILY_MART_RELATION} values (?)", [mart_watermark])


def test_the_daily_mart_resumes_while_the_log_still_holds_the_run_it_took_in(con):
    _log_and_mart(con, [RUN_1, RUN_2], RUN_1)
    assert daily_mart_must_rebuild(con) is None


def test_the_daily_mart_rebuilds_when_the_log_was_rebuilt_after_its_watermark(con):
    _log_and_mart(con, [RUN_2], RUN_1)
    reason = daily_mart_must_rebuild(con)
    assert reason is not None and "int_credit_replay_delta was rebuilt" in reason


@pytest.mark.bigquery
def test_on_bigquery_missing_relations_vanished_rows_and_a_rebuilt_log_read_as_on_duckdb(
    bigquery_emulator,
):
    from credits_pipeline_tests.bigquery_emulator import emulator_warehouse

    warehouse = emulator_warehouse(bigquery_emulator)
    with warehouse.connect() as con:
        con.execute("create or replace table raw.credit_histories (id bigint, _partition date)")
        con.execute("create or replace table raw.credit_histories__open (id bigint)")
        _ledger(con, [1], [4])
        assert replay_must_rebuild(con) is None and daily_mart_must_rebuild(con) is None
        _replay(con, [(1, dt.date(2025, 3, 1)), (2, dt.date(2025, 3, 9)), (4, dt.date(2025, 3, 3))])
        assert days_with_vanished_rows(con) == [dt.date(2025, 3, 9)]
        _log_and_mart(con, [RUN_2], RUN_1)
        assert daily_mart_must_rebuild(con) is not None
