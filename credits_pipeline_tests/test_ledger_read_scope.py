"""A daily run reads the source's ledger by primary key; a full check still compares every day.

Without an index on `created_at`, every filter on days scanned the source's whole ledger, so a
daily run read hundreds of times the day's rows (issue 10, item 2). An ordinary cut now re-checks
only the most recent closed days and reads id ranges; every `CREDITS_LEDGER_FULL_CHECK_DAYS` a
full check compares every closed day. The pure reasoning is tested directly; the whole path runs
on SQLite, MariaDB (where the server's own row counter measures what was read) and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.extract.assets import (
    CLOSED_DAYS_CHECK,
    LEDGER_CHECK_METADATA,
    READ_FROM_ID_METADATA,
)
from credits_pipeline.extract.fingerprint import (
    ClosedDaysPlan,
    DayFingerprint,
    RecentCheck,
    StoredFingerprint,
    bounded_cut_where,
    closed_range_read_from,
    days_that_lost_rows,
    full_check_due,
    recent_check,
    recent_plan_is_complete,
    synthesized_source_days,
)
from credits_pipeline_tests.harness import (
    assert_same_rows,
    check_results,
    ledger_as_of_cut,
    ledger_row,
    query,
    run_extraction,
    ts,
    write_source,
)

D = dt.date


def fp(rows: int, id_sum: int) -> DayFingerprint:
    return DayFingerprint(rows, id_sum, rows, rows * 7)


# -- the pure reasoning ---------------------------------------------------------------------------


def test_a_full_check_is_due_without_one_before_when_asked_every_run_and_after_the_interval():
    cut = dt.datetime(2025, 3, 10, 2)
    assert full_check_due(None, cut, 7)
    assert full_check_due(cut - dt.timedelta(hours=1), cut, 0)
    assert not full_check_due(cut - dt.timedelta(days=6, hours=23), cut, 7)
    assert full_check_due(cut - dt.timedelta(days=7), cut, 7)


def test_the_recent_check_reads_from_the_first_rechecked_id_or_just_above_the_late_mark():
    stored = {
        D(2025, 1, 1): StoredFingerprint(40, fp(2, 3)),
        D(2025, 1, 9): StoredFingerprint(50, fp(1, 45)),
    }
    assert recent_check(stored, D(2025, 1, 10), D(2025, 1, 7), 44, 60) == RecentCheck(
        D(2025, 1, 7), 41
    )
    assert recent_check(stored, D(2025, 1, 10), D(2025, 1, 7), 30, 60).min_id == 30
    assert recent_check({}, D(2025, 1, 10), D(2025, 1, 7), None, 60).min_id == 61


def test_a_rerun_of_recently_closed_days_reads_from_their_first_id_and_older_days_by_date():
    stored = {
        D(2025, 1, 8): StoredFingerprint(50, fp(3, 120)),
        D(2025, 1, 9): StoredFingerprint(60, fp(4, 210)),
    }
    recheck_from = D(2025, 1, 8)
    days = [D(2025, 1, 8), D(2025, 1, 9)]
    # the first id held for them, below the late floor and the lowest bound + 1
    assert closed_range_read_from(days, stored, recheck_from, 38, 55) == 38
    # a day held empty: from its bound + 1 or the late floor, whichever is lower
    assert closed_range_read_from([D(2025, 1, 9)], stored, recheck_from, None, 70) == 61
    assert closed_range_read_from([D(2025, 1, 9)], stored, recheck_from, None, 57) == 57
    # a day older than the re-checked ones, or never read: by its dates
    assert closed_range_read_from([D(2025, 1, 7), *days], stored, recheck_from, 30, 55) is None
    assert closed_range_read_from([D(2025, 1, 10)], stored, recheck_from, None, 55) is None


def test_an_older_day_not_rechecked_keeps_its_fingerprint_plus_its_late_rows():
    stored = {
        D(2025, 1, 1): StoredFingerprint(40, fp(2, 3)),
        D(2025, 1, 9): StoredFingerprint(40, fp(1, 39)),
    }
    check = RecentCheck(D(2025, 1, 8), 39)
    # counted from id 39 on: Jan 1 got a late row (id 42) above its bound; Jan 9 is whole
    counted = {
        D(2025, 1, 1): {40: DayFingerprint(), 45: fp(1, 42)},
        D(2025, 1, 9): {40: fp(1, 39), 45: fp(1, 39)},
    }
    got = synthesized_source_days(stored, counted, check, D(2025, 1, 10), [40, 45])
    assert got == {
        D(2025, 1, 1): {40: fp(2, 3), 45: DayFingerprint(3, 45, 3, 21)},
        D(2025, 1, 9): {40: fp(1, 39), 45: fp(1, 39)},
    }


def test_an_older_day_without_late_rows_is_taken_as_it_was_read():
    stored = {D(2025, 1, 1): StoredFingerprint(40, fp(2, 3))}
    got = synthesized_source_days(
        stored, {}, RecentCheck(D(2025, 1, 8), 41), D(2025, 1, 10), [40, 45]
    )
    assert got == {D(2025, 1, 1): {40: fp(2, 3), 45: fp(2, 3)}}


def test_rows_in_an_older_day_never_read_or_at_a_bound_not_computed_ask_for_a_full_check():
    check = RecentCheck(D(2025, 1, 8), 41)
    never_read = {D(2025, 1, 2): {45: fp(1, 43)}}
    assert synthesized_source_days({}, never_read, check, D(2025, 1, 10), [45]) is None
    stored = {D(2025, 1, 1): StoredFingerprint(30, fp(2, 3))}
    assert synthesized_source_days(stored, {}, check, D(2025, 1, 10), [40, 45]) is None


def test_a_recent_plan_that_would_reread_an_older_day_or_read_one_first_is_not_complete():
    check = RecentCheck(D(2025, 1, 8), 41)
    plan = ClosedDaysPlan(40, (D(2025, 1, 9),), (), ())
    assert recent_plan_is_complete(plan, check)
    assert not recent_plan_is_complete(ClosedDaysPlan(40, (D(2025, 1, 2),), (), ()), check)
    assert not recent_plan_is_complete(ClosedDaysPlan(40, (), (D(2025, 1, 9),), ()), check)


def test_a_changed_day_that_lost_rows_is_told_apart_from_one_rewritten_in_place():
    stored = {
        D(2025, 1, 9): StoredFingerprint(40, fp(2, 3)),
        D(2025, 1, 8): StoredFingerprint(40, fp(2, 5)),
    }
    source = {D(2025, 1, 9): {40: fp(1, 1)}, D(2025, 1, 8): {40: DayFingerprint(2, 5, 2, 99)}}
    plan = ClosedDaysPlan(40, (D(2025, 1, 8), D(2025, 1, 9)), (), ())
    assert days_that_lost_rows(plan, stored, source) == (D(2025, 1, 9),)
    assert days_that_lost_rows(plan, stored, {D(2025, 1, 8): source[D(2025, 1, 8)]}) == (
        D(2025, 1, 9),
    )


def test_the_bounded_read_keeps_the_days_filter_and_lists_open_rows_without_a_day_by_id():
    where, params = bounded_cut_where("created_at IS NULL", {"a": 1}, 120, [7, 3, 7])
    assert where == (
        "(id >= :read_from_id AND (created_at IS NULL)) OR id IN (:open_id_0, :open_id_1)"
    )
    assert params == {"a": 1, "read_from_id": 120, "open_id_0": 3, "open_id_1": 7}


# -- the whole path on each source database -------------------------------------------------------

DAYS = 60  # closed days of history, four rows each, ids in day order
ROWS_A_DAY = 4


def _history() -> list[dict]:
    rows, next_id = [], 1
    for day in range(DAYS):
        for k in range(ROWS_A_DAY):
            rows.append(ledger_row(next_id, 1 + k % 2, 2, 15, 500, ts(day, 1 + k)))
            next_id += 1
    return rows


def _insert(conn: sa.Connection, rows: list[dict]) -> None:
    columns = list(rows[0])
    conn.execute(
        sa.text(
            f"insert into credit_histories ({', '.join(columns)}) "
            f"values ({', '.join(':' + c for c in columns)})"
        ),
        rows,
    )


@contextmanager
def _rows_read_on_mariadb(url: str) -> Iterator[list[int]]:
    """ROWS_READ of the test database's `credit_histories` by the server itself (userstat)."""
    engine = sa.create_engine(url)
    database = sa.make_url(url).database
    figure: list[int] = []

    def rows_read(conn) -> int:
        value = conn.execute(
            sa.text(
                "select coalesce(sum(rows_read), 0) from information_schema.TABLE_STATISTICS "
                "where table_schema = :db and table_name = 'credit_histories'"
            ),
            {"db": database},
        ).scalar_one()
        return int(value)

    with engine.connect() as conn:
        was_on = int(conn.exec_driver_sql("select @@global.userstat").scalar_one())
        conn.exec_driver_sql("set global userstat = 1")
        before = rows_read(conn)
    try:
        yield figure
        with engine.connect() as conn:
            figure.append(rows_read(conn) - before)
    finally:
        if not was_on:
            with engine.connect() as conn:
                conn.exec_driver_sql("set global userstat = 0")
        engine.dispose()


def _cut_metadata(result: dg.ExecuteInProcessResult) -> dict:
    mats = result.asset_materializations_for_node("raw_consistent_cut")
    return next(
        m for m in mats if m.asset_key == dg.AssetKey(["raw", "credit_histories__open"])
    ).metadata


def _amount(warehouse: str, row_id: int) -> int:
    rows = query(
        warehouse,
        f"select amount from raw.credit_histories where id = {row_id} "
        f"union all select amount from raw.credit_histories__open where id = {row_id}",
    )
    return int(rows[0][0])


def _a_daily_run_reads_by_id_and_a_full_check_finds_the_rest(
    url: str, tmp_path, monkeypatch, measure_on_mariadb: bool
) -> None:
    instance_home = tmp_path / "dagster_home"
    instance_home.mkdir()
    warehouse = str(tmp_path / "warehouse.duckdb")
    monkeypatch.delenv(settings.LEDGER_FULL_CHECK_DAYS_VAR, raising=False)
    monkeypatch.delenv(settings.LEDGER_RECHECK_DAYS_VAR, raising=False)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    open_id, late_commit_id = 300, 290  # ids 241..299 are not handed out yet
    engine = write_source(
        url, [*_history(), ledger_row(open_id, 1, 2, 15, 470, now - dt.timedelta(minutes=5))]
    )
    last_day = (D(2025, 1, 1) + dt.timedelta(days=DAYS - 1)).isoformat()
    new_day = (D(2025, 1, 1) + dt.timedelta(days=DAYS)).isoformat()
    history_rows = DAYS * ROWS_A_DAY
    with dg.instance_for_test(temp_dir=str(instance_home)) as instance:
        assert run_extraction(instance, url, warehouse, first="2025-01-01", last=last_day).success

        # the next day: its rows, a row written late into an old day, a row of the open day
        # inserted before the cut that committed after it (its id below the cut's highest), a
        # rewrite in a recent closed day (re-checked) and one in an old day (left to the full
        # check)
        old_rewritten, recent_rewritten = 8, history_rows - 2  # Jan 2, and the day before last
        late_id = open_id + ROWS_A_DAY + 1
        with engine.begin() as conn:
            _insert(
                conn,
                [
                    ledger_row(open_id + 1 + k, 1 + k % 2, 2, 15, 485, ts(DAYS, 1 + k))
                    for k in range(ROWS_A_DAY)
                ]
                + [
                    ledger_row(late_id, 2, 2, 15, 485, ts(10, 9)),
                    ledger_row(late_commit_id, 2, 2, 15, 470, now - dt.timedelta(minutes=10)),
                ],
            )
            conn.execute(
                sa.text(f"update credit_histories set amount = 99 where id = {old_rewritten}")
            )
            conn.execute(
                sa.text(f"update credit_histories set amount = 77 where id = {recent_rewritten}")
            )
        if measure_on_mariadb:
            with _rows_read_on_mariadb(url) as read:
                result = run_extraction(instance, url, warehouse, first=new_day, last=new_day)
            # the new rows and the re-checked days (a few times each), never the history
            assert read[0] < history_rows // 3, read
        else:
            result = run_extraction(instance, url, warehouse, first=new_day, last=new_day)
        assert result.success
        meta = _cut_metadata(result)
        assert meta[LEDGER_CHECK_METADATA].value.startswith("recent")
        assert meta[READ_FROM_ID_METADATA].value > 1
        assert query(
            warehouse, f"select _partition from raw.credit_histories where id = {late_id}"
        ) == [(D(2025, 1, 11),)]
        assert _amount(warehouse, recent_rewritten) == 77
        assert query(
            warehouse, f"select id from raw.credit_histories__open where id = {late_commit_id}"
        )
        check = check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)]
        assert not check.passed and check.metadata["closed_days_changed"].value == 1
        # what an ordinary run gives up: the old day's rewrite waits for the full check
        assert _amount(warehouse, old_rewritten) == 15

        monkeypatch.setenv(settings.LEDGER_FULL_CHECK_DAYS_VAR, "0")
        if measure_on_mariadb:
            with _rows_read_on_mariadb(url) as read:
                result = run_extraction(instance, url, warehouse, first=new_day, last=new_day)
            assert read[0] >= history_rows, read  # the full check scans the ledger
        else:
            result = run_extraction(instance, url, warehouse, first=new_day, last=new_day)
        assert result.success
        assert _cut_metadata(result)[LEDGER_CHECK_METADATA].value.startswith("full")
        assert _amount(warehouse, old_rewritten) == 99
        check = check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)]
        assert not check.passed and check.metadata["closed_days_changed"].value == 1

        # and the warehouse is the one a fresh extraction builds
        fresh = str(tmp_path / "fresh.duckdb")
        assert run_extraction(instance, url, fresh, first="2025-01-01", last=new_day).success
    assert_same_rows(ledger_as_of_cut(warehouse), ledger_as_of_cut(fresh), "ledger as of the cut")
    for table in ("credit_histories", "credit_histories__rejected"):
        assert_same_rows(
            query(warehouse, f"select * from raw.{table}"),
            query(fresh, f"select * from raw.{table}"),
            table,
        )
    engine.dispose()


def test_a_daily_run_reads_by_id_and_a_full_check_finds_the_rest_on_sqlite(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    _a_daily_run_reads_by_id_and_a_full_check_finds_the_rest(url, tmp_path, monkeypatch, False)


@pytest.mark.mysql
def test_a_daily_run_reads_by_id_and_a_full_check_finds_the_rest_on_mariadb(
    fresh_mysql_url, tmp_path, monkeypatch
):
    _a_daily_run_reads_by_id_and_a_full_check_finds_the_rest(
        fresh_mysql_url, tmp_path, monkeypatch, True
    )


@pytest.mark.postgres
def test_a_daily_run_reads_by_id_and_a_full_check_finds_the_rest_on_postgresql(
    fresh_postgres_url, tmp_path, monkeypatch
):
    _a_daily_run_reads_by_id_and_a_full_check_finds_the_rest(
        fresh_postgres_url, tmp_path, monkeypatch, False
    )


def _ledger_metadata(result: dg.ExecuteInProcessResult) -> dict:
    mats = result.asset_materializations_for_node("raw__credit_histories")
    return next(m for m in mats if m.asset_key == dg.AssetKey(["raw", "credit_histories"])).metadata


def _a_second_run_the_same_day_reads_the_newest_closed_day_by_id(
    url: str, tmp_path, monkeypatch, measure_on_mariadb: bool
) -> None:
    """A second run the same day takes the newest closed day again (`catch_up_window`): it is
    read from its first id in the warehouse, not by its dates (a scan of the whole ledger on the
    contract's schema, which has no index on `created_at`), and still picks up a row written late
    into it and a rewrite of one of its rows. The days end yesterday, on the real clock."""
    instance_home = tmp_path / "dagster_home"
    instance_home.mkdir()
    warehouse = str(tmp_path / "warehouse.duckdb")
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    days = [today - dt.timedelta(days=n) for n in range(DAYS, 0, -1)]
    monkeypatch.setenv(settings.LEDGER_START_DATE_VAR, days[0].date().isoformat())
    monkeypatch.delenv(settings.LEDGER_FULL_CHECK_DAYS_VAR, raising=False)
    monkeypatch.delenv(settings.LEDGER_RECHECK_DAYS_VAR, raising=False)
    history = [
        ledger_row(1 + i * ROWS_A_DAY + k, 1 + k % 2, 2, 15, 500, day + dt.timedelta(hours=1 + k))
        for i, day in enumerate(days)
        for k in range(ROWS_A_DAY)
    ]
    engine = write_source(url, history)
    first, yesterday = days[0].date().isoformat(), days[-1].date().isoformat()
    yesterdays_first = len(history) - ROWS_A_DAY + 1
    with dg.instance_for_test(temp_dir=str(instance_home)) as instance:
        assert run_extraction(instance, url, warehouse, first=first, last=yesterday).success
        late_id = len(history) + 1
        with engine.begin() as conn:
            _insert(conn, [ledger_row(late_id, 2, 2, 15, 485, days[-1] + dt.timedelta(hours=20))])
            conn.execute(
                sa.text(f"update credit_histories set amount = 66 where id = {yesterdays_first}")
            )
        if measure_on_mariadb:
            with _rows_read_on_mariadb(url) as read:
                result = run_extraction(instance, url, warehouse, first=yesterday, last=yesterday)
            assert read[0] < len(history) // 3, read  # yesterday's rows, never the history
        else:
            result = run_extraction(instance, url, warehouse, first=yesterday, last=yesterday)
        assert result.success
        assert _cut_metadata(result)[LEDGER_CHECK_METADATA].value.startswith("recent")
        assert _ledger_metadata(result)[READ_FROM_ID_METADATA].value == yesterdays_first
        assert query(
            warehouse, f"select _partition from raw.credit_histories where id = {late_id}"
        ) == [(days[-1].date(),)]
        assert _amount(warehouse, yesterdays_first) == 66
        fresh = str(tmp_path / "fresh.duckdb")
        assert run_extraction(instance, url, fresh, first=first, last=yesterday).success

    def rows(path: str, table: str) -> list[tuple]:
        # a fingerprint's bound is the source's highest id when it was taken: it differs by design
        columns = "* exclude (through_id)" if table == "_ledger_fingerprints" else "*"
        return query(path, f"select {columns} from raw.{table}")

    for table in ("credit_histories", "credit_histories__rejected", "_ledger_fingerprints"):
        assert_same_rows(rows(warehouse, table), rows(fresh, table), table)
    engine.dispose()


def test_a_second_run_the_same_day_reads_the_newest_closed_day_by_id_on_sqlite(
    tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    _a_second_run_the_same_day_reads_the_newest_closed_day_by_id(url, tmp_path, monkeypatch, False)


@pytest.mark.mysql
def test_a_second_run_the_same_day_reads_the_newest_closed_day_by_id_on_mariadb(
    fresh_mysql_url, tmp_path, monkeypatch
):
    _a_second_run_the_same_day_reads_the_newest_closed_day_by_id(
        fresh_mysql_url, tmp_path, monkeypatch, True
    )
