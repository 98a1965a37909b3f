"""The ledger's fingerprints are summed from the rows a read fetched, not asked of the source again.

A partition run used to ask the source for its days' fingerprints before reading the same rows,
and a recent cut aggregated the re-checked days and then read from the same ids: the source read
those rows twice (issue 10's rows-read target). The sums taken from the read's validated batches
must equal the source's own aggregate exactly — on every column, through both readers, on MariaDB
and PostgreSQL — or every closed day would look rewritten the next day. A day holding a
quarantined row keeps no fingerprint (its share is unknown); the cut's one read is narrowed in
the stage to what the cut needs, and the whole path still equals a fresh extraction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import dagster as dg
import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.extract.assets import (
    LEDGER_CHECK_METADATA,
    ROWS_ALREADY_HELD_METADATA,
    ROWS_READ_AGAIN_METADATA,
)
from credits_pipeline.extract.common import ROWS_READ_METADATA
from credits_pipeline.extract.fingerprint import source_day_fingerprints, source_max_id
from credits_pipeline.extract.read_fingerprint import ReadFingerprints
from credits_pipeline.source import fast_reader, reader
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.validation.outcome import FAILED_COLUMN, REASON_COLUMN, ValidatedBatch
from credits_pipeline.validation.quarantine import validate_batch
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.raw_tables import positional
from credits_pipeline_tests.harness import (
    assert_same_rows,
    ledger_as_of_cut,
    ledger_row,
    query,
    run_extraction,
    ts,
    write_source,
)
from credits_pipeline_tests.test_late_rows import FINGERPRINT_LEDGER, _insert_sql

D = dt.date
BOUND = 3  # an earlier bound: only the rows at or below id 3 count at it


def _read_fingerprints(url: str, fast: bool, **limits) -> dict:
    prints = ReadFingerprints([BOUND, 9], **limits)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            batches = (
                fast_reader.read_batches(url, CREDIT_HISTORIES, batch_size=2, fallback_conn=conn)
                if fast
                else reader.read_batches(conn, CREDIT_HISTORIES, batch_size=2)
            )
            for frame in batches:
                prints.add(validate_batch(CREDIT_HISTORIES.name, frame))
    finally:
        engine.dispose()
        prints.close()
    assert prints.complete and not prints.unknown_days
    return prints.result()


def _sums_from_a_read_equal_the_sources_aggregate(url: str) -> None:
    engine = write_source(url, [])
    try:
        with engine.begin() as conn:  # as text: the source holds exactly these JSON texts
            conn.execute(sa.text(_insert_sql()), FINGERPRINT_LEDGER)
        with engine.connect() as conn:
            assert source_max_id(conn) == 9
            whole = source_day_fingerprints(conn, [BOUND, 9])
            limited = source_day_fingerprints(conn, [BOUND, 9], None, D(2025, 1, 3), min_id=3)
    finally:
        engine.dispose()
    assert len(whole) == 3 and whole[D(2025, 1, 2)][BOUND].rows == 1
    for fast in (False, True):
        assert _read_fingerprints(url, fast) == whole, fast
        assert _read_fingerprints(url, fast, to_day=D(2025, 1, 3), min_id=3) == limited, fast


@pytest.mark.mysql
def test_the_fingerprints_summed_from_a_read_equal_the_sources_aggregate_on_mariadb(
    fresh_mysql_url,
):
    _sums_from_a_read_equal_the_sources_aggregate(fresh_mysql_url)


@pytest.mark.postgres
def test_the_fingerprints_summed_from_a_read_equal_the_sources_aggregate_on_postgresql(
    fresh_postgres_url,
):
    _sums_from_a_read_equal_the_sources_aggregate(fresh_postgres_url)


def _batch(clean: list[dict], rejected_created_at: list[str | None]) -> ValidatedBatch:
    columns = CREDIT_HISTORIES.extracted_names
    frame = pd.DataFrame(clean, columns=columns)
    rejected = pd.DataFrame(
        [
            {"id": str(99 + i), "created_at": value, FAILED_COLUMN: "meta", REASON_COLUMN: "bad"}
            for i, value in enumerate(rejected_created_at)
        ],
        columns=[*columns, FAILED_COLUMN, REASON_COLUMN],
    ).astype(object)
    return ValidatedBatch(CREDIT_HISTORIES.name, frame, rejected, Counter())


def test_a_day_with_a_quarantined_row_keeps_no_fingerprint_and_other_days_keep_theirs():
    prints = ReadFingerprints([10])
    prints.add(
        _batch(
            [ledger_row(1, 1, 1, 500, 0, ts(0, 1)), ledger_row(2, 1, 2, 15, 500, ts(1, 2))],
            ["2025-01-02 05:00:00", None],  # a NULL-dated quarantined row belongs to no day
        )
    )
    prints.close()
    assert prints.complete and prints.unknown_days == {D(2025, 1, 2)}
    assert list(prints.result()) == [D(2025, 1, 1)]
    assert prints.result()[D(2025, 1, 1)][10].rows == 1
    assert prints.unknown_between(D(2025, 1, 1), D(2025, 1, 4)) == {D(2025, 1, 2)}


def test_a_quarantined_row_whose_day_cannot_be_read_leaves_every_day_of_the_read_unknown():
    prints = ReadFingerprints([10])
    prints.add(_batch([ledger_row(1, 1, 1, 500, 0, ts(0, 1))], ["0000-00-00 00:00:00"]))
    prints.close()
    assert not prints.complete
    assert prints.unknown_between(D(2025, 1, 1), D(2025, 1, 3)) == {D(2025, 1, 1), D(2025, 1, 2)}


def test_named_placeholders_become_positional_in_the_order_they_appear():
    sql, values = positional(
        "id >= :a AND (created_at < :b OR id IN (:a, :c_1))", {"a": 1, "b": "x", "c_1": 3}
    )
    assert sql == "id >= ? AND (created_at < ? OR id IN (?, ?))"
    assert values == [1, "x", 1, 3]


def test_a_stage_narrowed_to_a_where_keeps_its_rows_and_refuses_quarantined_ones():
    con = duckdb.connect()
    con.execute("create schema raw")
    stager = session.stager(con, CREDIT_HISTORIES, target="credit_histories__open")
    rows = [ledger_row(i, 1, 2, 15, 500, ts(i, 1)) for i in range(1, 6)]
    stager.append(_batch(rows, []))
    dropped = stager.keep_only(
        "id >= :first AND created_at >= :since OR id IN (:listed)",
        {"first": 2, "since": dt.datetime(2025, 1, 5), "listed": 1},
    )
    assert dropped == 2 and stager.stats.loaded == 3
    assert [r[0] for r in con.execute(f"select id from {stager.stage} order by id").fetchall()] == [
        1,
        4,
        5,
    ]
    stager.restart()
    assert stager.stats.loaded == 0
    assert con.execute(f"select count(*) from {stager.stage}").fetchone()[0] == 0
    stager.append(_batch(rows[:1], ["2025-01-02 05:00:00"]))
    with pytest.raises(ValueError, match="quarantined"):
        stager.keep_only("id > :x", {"x": 0})


# -- the whole path: a daily run's cut reads the re-checked days once -------------------------

DAYS = 8
ROWS_A_DAY = 3


@pytest.fixture(autouse=True)
def _default_ledger_checks(monkeypatch):
    """The daily runs below are ordinary (recent) checks with the default re-checked days."""
    monkeypatch.delenv(settings.LEDGER_FULL_CHECK_DAYS_VAR, raising=False)
    monkeypatch.delenv(settings.LEDGER_RECHECK_DAYS_VAR, raising=False)


def _cut_meta(result: dg.ExecuteInProcessResult) -> dict:
    mats = result.asset_materializations_for_node("raw_consistent_cut")
    return next(
        m for m in mats if m.asset_key == dg.AssetKey(["raw", "credit_histories__open"])
    ).metadata


def _daily_run_reads_the_rechecked_days_once(url: str, tmp_path, break_meta) -> dict:
    history = [
        ledger_row(1 + d * ROWS_A_DAY + k, 1 + k % 2, 2, 15, 500, ts(d, 1 + k))
        for d in range(DAYS)
        for k in range(ROWS_A_DAY)
    ]
    engine = write_source(url, history)
    warehouse = str(tmp_path / "warehouse.duckdb")
    last, new = (D(2025, 1, 1) + dt.timedelta(days=n) for n in (DAYS - 1, DAYS))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert run_extraction(instance, url, warehouse, last=last.isoformat()).success
        top = len(history)
        late = ledger_row(top + ROWS_A_DAY + 1, 2, 2, 15, 485, ts(2, 9))  # late into Jan 3
        day = [ledger_row(top + 1 + k, 1, 2, 15, 485, ts(DAYS, 1 + k)) for k in range(ROWS_A_DAY)]
        with engine.begin() as conn:
            conn.execute(sa.text(_insert_sql()), [*day, late])
            conn.execute(sa.text(f"update credit_histories set amount = 7 where id = {top}"))
        if break_meta:
            break_meta(engine, top - 1)  # a row of Jan 8, which the cut re-checks
        result = run_extraction(
            instance, url, warehouse, first=new.isoformat(), last=new.isoformat()
        )
        assert result.success
        meta = _cut_meta(result)
        assert meta[LEDGER_CHECK_METADATA].value.startswith("recent")
        fresh = str(tmp_path / "fresh.duckdb")
        assert run_extraction(instance, url, fresh, last=new.isoformat()).success
    engine.dispose()
    assert_same_rows(ledger_as_of_cut(warehouse), ledger_as_of_cut(fresh), "ledger as of the cut")
    for table in ("credit_histories", "credit_histories__rejected"):
        assert_same_rows(
            query(warehouse, f"select * from raw.{table}"),
            query(fresh, f"select * from raw.{table}"),
            table,
        )
    return meta


def _assert_read_once(url: str, tmp_path) -> None:
    meta = _daily_run_reads_the_rechecked_days_once(url, tmp_path, None)
    # one read from the re-checked days' first id: Jan 8 (rewritten), the new day Jan 9 (loaded
    # by its partition just before) and the late row; the cut keeps Jan 8 and the late row
    assert meta[ROWS_READ_METADATA].value == 2 * ROWS_A_DAY + 1
    assert meta[ROWS_ALREADY_HELD_METADATA].value == ROWS_A_DAY
    assert meta[ROWS_READ_AGAIN_METADATA].value == 0


@pytest.mark.mysql
def test_a_daily_runs_cut_reads_the_rechecked_days_once_on_mariadb(fresh_mysql_url, tmp_path):
    _assert_read_once(fresh_mysql_url, tmp_path)


@pytest.mark.postgres
def test_a_daily_runs_cut_reads_the_rechecked_days_once_on_postgresql(fresh_postgres_url, tmp_path):
    _assert_read_once(fresh_postgres_url, tmp_path)


def _malformed_meta_on_mariadb(engine: sa.Engine, row_id: int) -> None:
    """An older schema's `meta` without MariaDB's JSON check: a malformed text gets in."""
    with engine.begin() as conn:
        conn.execute(sa.text("alter table credit_histories modify meta longtext null"))
        conn.execute(
            sa.text("update credit_histories set meta = '{broken' where id = :id"), {"id": row_id}
        )


@pytest.mark.mysql
def test_a_quarantined_row_in_the_cuts_one_read_falls_back_to_the_sources_aggregate_on_mariadb(
    fresh_mysql_url, tmp_path
):
    meta = _daily_run_reads_the_rechecked_days_once(
        fresh_mysql_url, tmp_path, _malformed_meta_on_mariadb
    )
    # the one read met the quarantined row and was thrown away; the cut read as before: the
    # changed day Jan 8 whole (its broken row quarantined, as a fresh extraction does) and the
    # late row
    assert meta[ROWS_READ_AGAIN_METADATA].value == 2 * ROWS_A_DAY + 1
    assert meta[ROWS_ALREADY_HELD_METADATA].value == 0
    assert meta[ROWS_READ_METADATA].value == ROWS_A_DAY + 1
