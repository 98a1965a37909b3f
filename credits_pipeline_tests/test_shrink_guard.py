"""The shrink guard: an empty or truncated source never wipes the warehouse.

The decision (`shrink_refusal`) is tested directly; then the real extraction assets run from a
real SQLite source whose tables were emptied, and the whole `raw` schema must be unchanged, with
one message naming the table, both counts and the variable that lets the shrink through. The
end-to-end tests (the CLI on a demo, marts included) are in `test_safety_end_to_end.py`.
"""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.warehouse.shrink_guard import shrink_refusal
from credits_pipeline_tests.bigquery_emulator import (  # noqa: F401 - fixture and helper
    bigquery_emulator,
    emulator_warehouse,
)
from credits_pipeline_tests.harness import (
    ledger_row,
    query,
    run_extraction,
    step_failure_messages,
    ts,
    warehouse_fingerprint,
    write_source,
)

NOBODY = frozenset()


def _refusal(
    before: int, after: int, fraction: float = 0.5, allowed: frozenset = NOBODY
) -> str | None:
    return shrink_refusal(
        "raw.users", "users", before, after, min_fraction=fraction, allowed=allowed
    )


def test_a_table_going_to_zero_rows_is_refused_whatever_the_fraction():
    assert _refusal(200, 0, fraction=0.0) is not None
    message = _refusal(200, 0)
    assert message.startswith(
        "raw.users: the source returned 0 row(s) where the warehouse holds 200"
    )
    assert (
        f"{settings.ALLOW_SHRINK_VAR}=users" in message and settings.SHRINK_FRACTION_VAR in message
    )


def test_a_table_keeping_fewer_rows_than_the_fraction_is_refused_and_the_fraction_itself_passes():
    assert _refusal(200, 99) is not None
    assert "would keep only 49.5% of its rows" in _refusal(200, 99)
    assert _refusal(200, 100) is None
    assert _refusal(200, 180, fraction=0.95) is not None


def test_a_first_load_a_growing_table_and_an_empty_table_staying_empty_pass():
    assert _refusal(0, 0) is None
    assert _refusal(0, 5) is None
    assert _refusal(5, 5) is None
    assert _refusal(5, 9) is None


def test_the_table_named_in_the_allow_list_or_all_lets_the_shrink_through():
    assert _refusal(200, 0, allowed=frozenset({"users"})) is None
    assert _refusal(200, 0, allowed=frozenset({settings.ALLOW_SHRINK_ALL})) is None
    assert _refusal(200, 0, allowed=frozenset({"plans"})) is not None


def test_the_settings_read_the_variables_and_refuse_a_fraction_outside_zero_to_one(monkeypatch):
    monkeypatch.delenv(settings.SHRINK_FRACTION_VAR, raising=False)
    monkeypatch.setenv(settings.ALLOW_SHRINK_VAR, " Users, credit_histories ,")
    assert settings.shrink_fraction() == settings.DEFAULT_SHRINK_FRACTION
    assert settings.allowed_shrinks() == {"users", "credit_histories"}
    monkeypatch.setenv(settings.SHRINK_FRACTION_VAR, "0.8")
    assert settings.shrink_fraction() == 0.8
    for bad in ("1.5", "-0.1", "half"):
        monkeypatch.setenv(settings.SHRINK_FRACTION_VAR, bad)
        with pytest.raises(ValueError, match=settings.SHRINK_FRACTION_VAR):
            settings.shrink_fraction()


# -- through the real extraction assets ------------------------------------------------------------


@pytest.fixture
def instance(tmp_path):
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


def _empty(engine: sa.Engine, *tables: str) -> None:
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"delete from {table}"))


def test_an_emptied_source_fails_with_table_and_counts_and_leaves_every_raw_table_unchanged(
    instance, warehouse, sqlite_url, monkeypatch
):
    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    before = warehouse_fingerprint(warehouse)
    _empty(engine, "credit_histories", "users", "credit_events", "videos")

    result = run_extraction(instance, sqlite_url, warehouse)
    assert not result.success
    messages = step_failure_messages(result)
    assert any(
        m.startswith(
            "raw.credit_histories for [2025-01-01, 2025-01-06): the source returned 0 row(s) "
            "where the warehouse holds 4"
        )
        for m in messages
    ), messages
    assert any(
        m.startswith("raw.credit_events: the source returned 0 row(s) where the warehouse holds 3")
        for m in messages
    ), messages
    assert all(f"{settings.ALLOW_SHRINK_VAR}=" in m for m in messages), messages
    assert warehouse_fingerprint(warehouse) == before


def test_users_emptied_alone_are_refused_inside_the_consistent_cut_which_keeps_its_previous_state(
    instance, warehouse, sqlite_url, monkeypatch
):
    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    before = warehouse_fingerprint(warehouse)
    cut_before = query(warehouse, "select * from raw.extraction_cutoff")
    _empty(engine, "users")
    result = run_extraction(instance, sqlite_url, warehouse)
    assert not result.success
    [message] = step_failure_messages(result)
    assert message.startswith("raw.users: the source returned 0 row(s) where the warehouse holds 2")
    assert warehouse_fingerprint(warehouse) == before
    assert query(warehouse, "select * from raw.extraction_cutoff") == cut_before


def test_the_open_slice_is_judged_with_the_closed_days_so_its_daily_turnover_passes(
    instance, warehouse, sqlite_url, monkeypatch
):
    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    engine = write_source(sqlite_url)  # one open row (NULL created_at) next to four closed ones
    assert run_extraction(instance, sqlite_url, warehouse).success
    _empty(engine, "credit_histories where created_at is null")
    keys = [
        dg.AssetKey(["raw", t]) for t in ("users", "credit_histories__open", "extraction_cutoff")
    ]
    result = run_extraction(instance, sqlite_url, warehouse, selection=keys)
    assert result.success, step_failure_messages(result)  # 5 ledger rows -> 4: not a wipe
    assert query(warehouse, "select count(*) from raw.credit_histories__open") == [(0,)]


LEDGER_DAYS = 10
ROWS_PER_DAY = 10
CLOSED_FINGERPRINTS = (
    "select * from raw._ledger_fingerprints where partition_date < '2025-01-11' order by 1"
)
LEDGER_RELATION = (
    "raw.credit_histories (closed days and raw.credit_histories__open: the whole ledger)"
)


def _ten_days_of_ledger() -> list[dict]:
    """Ten closed days (2025-01-01 .. 01-10), ten rows each for the two users, ids in day order."""
    return [
        ledger_row(day * ROWS_PER_DAY + k + 1, 1 + k % 2, 2, 15, 500, ts(day, 1 + k))
        for day in range(LEDGER_DAYS)
        for k in range(ROWS_PER_DAY)
    ]


def _keep_one_ledger_row_in_ten(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("delete from credit_histories where id % 10 <> 0"))


def test_a_ledger_truncated_to_a_tenth_is_refused_by_the_next_days_cut_and_closed_days_stay(
    instance, warehouse, sqlite_url, monkeypatch
):
    """The daily run re-reads every closed day whose fingerprint changed: all of them, here.

    Measuring only the open slice, the cut replaced 90 of 100 closed rows with a WARN; judged as
    the whole ledger, before and after the fold in one transaction, it is refused and rolled back.
    """
    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    engine = write_source(sqlite_url, _ten_days_of_ledger())
    assert run_extraction(instance, sqlite_url, warehouse, last="2025-01-10").success
    before = warehouse_fingerprint(warehouse)
    cut_before = query(warehouse, "select * from raw.extraction_cutoff")
    fingerprints_before = query(warehouse, CLOSED_FINGERPRINTS)
    _keep_one_ledger_row_in_ten(engine)  # users intact

    new_day = run_extraction(instance, sqlite_url, warehouse, first="2025-01-11", last="2025-01-11")
    assert not new_day.success
    [message] = step_failure_messages(new_day)
    assert message.startswith(
        f"{LEDGER_RELATION}: the source returned 10 row(s) where the warehouse holds 100"
    ), message
    assert f"{settings.ALLOW_SHRINK_VAR}=credit_histories" in message
    after = warehouse_fingerprint(warehouse)
    for relation in ("credit_histories", "credit_histories__open", "credit_histories__rejected"):
        assert after[relation] == before[relation], relation
    assert query(warehouse, CLOSED_FINGERPRINTS) == fingerprints_before  # the new day adds its own
    assert query(warehouse, "select * from raw.extraction_cutoff") == cut_before

    monkeypatch.setenv(settings.ALLOW_SHRINK_VAR, "credit_histories")
    allowed = run_extraction(instance, sqlite_url, warehouse, first="2025-01-11", last="2025-01-11")
    assert allowed.success, step_failure_messages(allowed)
    assert query(warehouse, "select count(*) from raw.credit_histories") == [(LEDGER_DAYS,)]


def test_with_the_allow_variable_the_emptied_source_goes_through(
    instance, warehouse, sqlite_url, monkeypatch
):
    engine = write_source(sqlite_url)
    assert run_extraction(instance, sqlite_url, warehouse).success
    _empty(engine, "credit_histories", "users", "credit_events")
    monkeypatch.setenv(settings.ALLOW_SHRINK_VAR, "credit_histories,users")
    result = run_extraction(instance, sqlite_url, warehouse)
    [message] = step_failure_messages(result)  # credit_events was not allowed
    assert message.startswith("raw.credit_events:")
    assert query(warehouse, "select count(*) from raw.users") == [(0,)]
    assert query(warehouse, "select count(*) from raw.credit_histories") == [(0,)]
    monkeypatch.setenv(settings.ALLOW_SHRINK_VAR, settings.ALLOW_SHRINK_ALL)
    assert run_extraction(instance, sqlite_url, warehouse).success
    assert query(warehouse, "select count(*) from raw.credit_events") == [(0,)]


# -- the BigQuery twin, on the local emulator ------------------------------------------------------


@pytest.mark.bigquery
def test_on_bigquery_an_emptied_source_is_refused_the_same_way_and_raw_is_unchanged(
    tmp_path,
    monkeypatch,
    bigquery_emulator,
):
    from credits_pipeline_tests.test_bigquery import (
        RAW_COMPARED,
        _bigquery_rows,
        _run_bigquery_extraction,
    )

    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    emulator = bigquery_emulator
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    engine = write_source(url)
    warehouse = emulator_warehouse(emulator)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert _run_bigquery_extraction(instance, url, warehouse).success
        before = {name: _bigquery_rows(warehouse, name) for name in RAW_COMPARED}
        _empty(engine, "credit_histories", "users", "credit_events")
        result = _run_bigquery_extraction(instance, url, warehouse)
    assert not result.success
    messages = step_failure_messages(result)
    assert any(
        m.startswith(
            "raw.credit_histories for [2025-01-01, 2025-01-06): the source returned 0 row(s) "
            "where the warehouse holds 4"
        )
        for m in messages
    ), messages
    assert any(
        m.startswith("raw.credit_events: the source returned 0 row(s) where the warehouse holds 3")
        for m in messages
    ), messages
    assert {name: _bigquery_rows(warehouse, name) for name in RAW_COMPARED} == before


@pytest.mark.bigquery
def test_on_bigquery_a_ledger_truncated_to_a_tenth_is_refused_by_the_next_days_cut_the_same_way(
    tmp_path,
    monkeypatch,
    bigquery_emulator,
):
    from credits_pipeline_tests.test_bigquery import _bigquery_rows, _run_bigquery_extraction

    monkeypatch.delenv(settings.ALLOW_SHRINK_VAR, raising=False)
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    engine = write_source(url, _ten_days_of_ledger())
    warehouse = emulator_warehouse(bigquery_emulator)
    ledger = ("credit_histories", "credit_histories__open", "extraction_cutoff")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert _run_bigquery_extraction(instance, url, warehouse, last="2025-01-10").success
        before = {name: _bigquery_rows(warehouse, name) for name in ledger}
        _keep_one_ledger_row_in_ten(engine)
        result = _run_bigquery_extraction(instance, url, warehouse, "2025-01-11", "2025-01-11")
    assert not result.success
    [message] = step_failure_messages(result)
    assert message.startswith(
        f"{LEDGER_RELATION}: the source returned 10 row(s) where the warehouse holds 100"
    ), message
    assert {name: _bigquery_rows(warehouse, name) for name in ledger} == before
