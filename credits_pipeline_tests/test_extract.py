"""Extraction through Dagster from real SQLite, MariaDB and PostgreSQL sources into DuckDB."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline.names import VALIDATION_CHECK
from credits_pipeline.warehouse import raw_tables
from credits_pipeline_tests.harness import (
    check_results,
    clean_ledger,
    ledger_row,
    query,
    run_extraction,
    step_failure_messages,
    ts,
    warehouse_fingerprint,
    write_source,
)


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def warehouse(tmp_path) -> str:
    return str(tmp_path / "warehouse.duckdb")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"


def _assert_everything_extracted(warehouse: str) -> None:
    ledger_ids = query(
        warehouse,
        "select id from raw.credit_histories union all select id from raw.credit_histories__open "
        "order by 1",
    )
    assert [r[0] for r in ledger_ids] == [1, 2, 3, 4, 5]
    assert query(
        warehouse, "select id, remaining_credit_amount, extra_credits from raw.users order by id"
    ) == [
        (1, 470, 0),
        (2, 500, 100),
    ]
    assert query(warehouse, "select count(*) from raw.credit_events")[0][0] == 3


def test_sqlite_extraction_loads_every_ledger_row_including_a_null_created_at(
    instance, warehouse, sqlite_url
):
    write_source(sqlite_url)
    result = run_extraction(instance, sqlite_url, warehouse)
    assert result.success, step_failure_messages(result)
    _assert_everything_extracted(warehouse)
    # the NULL created_at row went to the open slice, read at the consistent cut
    assert query(warehouse, "select id from raw.credit_histories__open") == [(5,)]
    assert query(
        warehouse, "select _partition, count(*) from raw.credit_histories group by 1 order by 1"
    ) == [
        (ts(0).date(), 1),
        (ts(1).date(), 2),
        (ts(2).date(), 1),
    ]


@pytest.mark.mysql
def test_mariadb_extraction_gives_the_same_warehouse_as_sqlite(
    instance, warehouse, fresh_mysql_url
):
    write_source(fresh_mysql_url)
    result = run_extraction(instance, fresh_mysql_url, warehouse)
    assert result.success, step_failure_messages(result)
    _assert_everything_extracted(warehouse)


@pytest.mark.postgres
def test_postgresql_extraction_gives_the_same_warehouse_as_sqlite(
    instance, warehouse, fresh_postgres_url
):
    write_source(fresh_postgres_url)
    result = run_extraction(instance, fresh_postgres_url, warehouse)
    assert result.success, step_failure_messages(result)
    _assert_everything_extracted(warehouse)


def test_personal_data_is_never_extracted(instance, warehouse, sqlite_url):
    write_source(sqlite_url)
    run_extraction(instance, sqlite_url, warehouse)
    columns = {r[0] for r in query(warehouse, "select column_name from information_schema.columns")}
    assert "email" not in columns and "name" in columns  # credit_events.name / plans.name only
    user_columns = {
        r[0]
        for r in query(
            warehouse,
            "select column_name from information_schema.columns where table_schema='raw' and "
            "table_name like 'users%'",
        )
    }
    assert "name" not in user_columns and "email" not in user_columns


def test_rematerializing_a_partition_range_changes_nothing(instance, warehouse, sqlite_url):
    write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    before = warehouse_fingerprint(warehouse)
    assert run_extraction(instance, sqlite_url, warehouse).success
    assert run_extraction(
        instance, sqlite_url, warehouse, first="2025-01-02", last="2025-01-02"
    ).success
    assert warehouse_fingerprint(warehouse) == before


def test_reloading_a_partition_replaces_exactly_that_day(instance, warehouse, sqlite_url):
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    with engine.begin() as conn:  # the application corrects a row of day 2 (it should not, but may)
        conn.execute(sa.text("update credit_histories set description = 'fixed' where id = 3"))
        conn.execute(
            sa.text("update credit_histories set description = 'not reloaded' where id = 1")
        )
    assert run_extraction(
        instance, sqlite_url, warehouse, first="2025-01-02", last="2025-01-02"
    ).success
    rows = dict(query(warehouse, "select id, description from raw.credit_histories"))
    assert rows[3] == "fixed" and rows[1] is None and len(rows) == 4


def test_rows_the_warehouse_cannot_hold_are_quarantined_with_a_reason_and_nothing_is_lost(
    instance, warehouse, sqlite_url
):
    ledger = clean_ledger()
    ledger[1]["meta"] = "{not json"
    ledger.append(ledger_row(6, 2, 2, 15, 500, ts(2, 5), event_type=3))  # odd domain: loads
    engine = write_source(sqlite_url, ledger)
    with engine.begin() as conn:  # SQLite keeps whatever it is given: text in an integer column
        conn.execute(sa.text("update credit_histories set amount = 'fifteen' where id = 3"))
    result = run_extraction(instance, sqlite_url, warehouse)
    assert result.success, step_failure_messages(result)
    rejected = query(
        warehouse, "select id, _column, _reason from raw.credit_histories__rejected order by id"
    )
    assert [(r[0], r[1]) for r in rejected] == [("2", "meta"), ("3", "amount")]
    assert "malformed JSON" in rejected[0][2] and "fifteen" in rejected[1][2]
    loaded = [
        r[0]
        for r in query(
            warehouse,
            "select id from raw.credit_histories union all select id from "
            "raw.credit_histories__open order by 1",
        )
    ]
    assert loaded == [1, 4, 5, 6]  # 6 rows read = 4 loaded + 2 quarantined
    check = check_results(result)[("raw/credit_histories", VALIDATION_CHECK)]
    assert not check.passed
    assert check.metadata["rows_quarantined"].value == 2
    assert "event_type" in check.metadata["domain_warnings"].value


def test_a_load_that_fails_midway_leaves_the_previous_warehouse_intact(
    instance, warehouse, sqlite_url, monkeypatch
):
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    before = warehouse_fingerprint(warehouse)
    with engine.begin() as conn:
        conn.execute(sa.text("delete from credit_histories where id in (2, 3)"))

    def explode(self, *args, **kwargs):  # fail after the old partitions were deleted, before commit
        raise RuntimeError("disk full while writing the quarantine")

    monkeypatch.setattr(raw_tables.Stager, "_insert_rejected", explode)
    result = run_extraction(
        instance, sqlite_url, warehouse, selection=[dg.AssetKey(["raw", "credit_histories"])]
    )
    assert not result.success
    assert warehouse_fingerprint(warehouse) == before


def test_a_source_missing_a_column_fails_with_one_message_naming_table_and_column(
    instance, warehouse, sqlite_url
):
    engine = write_source(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("alter table credit_histories drop column meta"))
    result = run_extraction(instance, sqlite_url, warehouse)
    assert not result.success
    messages = step_failure_messages(result)
    assert any("syllaby_v2.credit_histories: column meta is missing" in m for m in messages), (
        messages
    )
    assert not any("Traceback" in m for m in messages)


def test_an_unreachable_source_fails_with_one_clear_message_without_credentials(
    instance, warehouse
):
    url = "mysql+pymysql://reader:s3cret-pass@127.0.0.1:1/syllaby_v2"
    result = run_extraction(
        instance, url, warehouse, selection=[dg.AssetKey(["raw", "credit_events"])]
    )
    assert not result.success
    [message] = step_failure_messages(result)
    assert message.startswith(
        "cannot connect to the source database mysql+pymysql://127.0.0.1:1/syllaby_v2"
    )
    assert "s3cret" not in message and "reader" not in message


def test_a_row_written_after_the_closed_days_were_loaded_is_read_in_the_consistent_cut(
    instance, warehouse, sqlite_url
):
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    with engine.begin() as conn:  # a late write into an already-loaded day, and a balance change
        conn.execute(
            sa.text(
                "insert into credit_histories (id, user_id, credit_events_id, calculative_index, "
                "event_value, amount, previous_amount, event_type, meta, created_at) values (7, "
                "1, 2, 1, 15, 15, 470, 2, '[]', '2025-01-02 23:59:59')"
            )
        )
        conn.execute(sa.text("update users set remaining_credit_amount = 455 where id = 1"))
    keys = [
        dg.AssetKey(["raw", t]) for t in ("users", "credit_histories__open", "extraction_cutoff")
    ]
    assert run_extraction(instance, sqlite_url, warehouse, selection=keys).success
    assert query(warehouse, "select id from raw.credit_histories__open order by id") == [(5,), (7,)]
    assert query(warehouse, "select remaining_credit_amount from raw.users where id = 1") == [
        (455,)
    ]
    closed_before, max_id = query(
        warehouse, "select ledger_closed_before, ledger_closed_max_id from raw.extraction_cutoff"
    )[0]
    # the mark moved to the snapshot's highest id: the late row is now also held by its own day
    assert closed_before.date().isoformat() == "2025-01-06" and max_id == 7
    assert query(warehouse, "select _partition from raw.credit_histories where id = 7") == [
        (dt.date(2025, 1, 2),)
    ]


def test_content_tables_merge_changed_rows_by_id_after_the_first_full_read(
    instance, warehouse, sqlite_url
):
    engine = write_source(sqlite_url)
    key = [dg.AssetKey(["raw", "videos"])]
    assert run_extraction(instance, sqlite_url, warehouse, selection=key).success
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "update videos set status = 'completed', updated_at = '2025-01-03 00:00:00' "
                "where id = 1"
            )
        )
        conn.execute(
            sa.text(
                "insert into videos (id, user_id, type, status, exports, retries, created_at, "
                "updated_at) values (2, 2, 'faceless', 'draft', 0, 0, '2025-01-03 01:00:00', "
                "'2025-01-03 01:00:00')"
            )
        )
    result = run_extraction(instance, sqlite_url, warehouse, selection=key)
    assert result.success
    assert query(warehouse, "select id, status from raw.videos order by id") == [
        (1, "completed"),
        (2, "draft"),
    ]
    mat = result.asset_materializations_for_node("raw__videos")[0]
    assert mat.metadata["extraction_mode"].value == "incremental"


def test_a_quarantined_ledger_row_is_quarantined_once_whatever_range_reads_it(
    instance, warehouse, sqlite_url
):
    ledger = clean_ledger()
    ledger[2]["meta"] = "{broken"  # id 3, created on day 2
    write_source(sqlite_url, ledger)
    assert run_extraction(instance, sqlite_url, warehouse).success  # days 1..5
    assert run_extraction(
        instance, sqlite_url, warehouse, first="2025-01-02", last="2025-01-03"
    ).success
    assert run_extraction(
        instance, sqlite_url, warehouse, first="2025-01-02", last="2025-01-02"
    ).success
    assert query(warehouse, "select id, _partition from raw.credit_histories__rejected") == [
        ("3", "2025-01-02")
    ]
