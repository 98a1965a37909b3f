"""The history of stored balances: the dbt snapshot of raw.users and the mart that reads it by day.

raw.users holds only what the application stores at the latest cut-off; the snapshot
`credits.users_stored_balances` keeps every version a run read, valid from that run's extraction
cut-off, and `marts.user_stored_balance_history` answers "what was stored on day X" next to the
ledger's balance that day. The hand-written ledger of test_dbt_models.py is built on day 1
(cut-off 2025-03-31 03:00); day 2 (dbt_builds.py, cut-off 2025-04-01 03:00) brings new
ledger rows, a new user, and user 1's stored pools as the application moved them. Every expected
value is worked out by hand from that ledger.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline_tests.dbt_builds import (
    DAY_2_CUTOFF,
    DAY_2_ROWS,
    advance_to,
    dbt_build,
)
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest
from credits_pipeline_tests.test_dbt_models import CUTOFF, T, query, write_fixture_warehouse

D = dt.date
# After day 2, user 1's pools as the ledger leaves them (rows 111-115): the subscription pool at
# 0 after the 600-credit real clone, 447 = 550 - (600 - 497) purchased, then 496 from the 497 the
# last row recorded.
DAY_2_STORED_USER_1 = (496, 447)

WHAT_WAS_STORED_ON = """
select stored_subscription_balance, stored_purchased_balance, stored_balance, stored_observed_at,
    ledger_balance_date, ledger_balance
from marts.user_stored_balance_history
where user_id = ? and valid_from_date <= ? and (valid_to_date is null or ? < valid_to_date)
"""


def set_stored_pools(warehouse: Path, user_id: int, remaining: int, extra: int) -> None:
    """What the application stores after the day's ledger rows (the next cut reads it)."""
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            "update raw.users set remaining_credit_amount = ?, extra_credits = ? where id = ?",
            [remaining, extra, user_id],
        )
    finally:
        con.close()


def snapshot_versions(warehouse: Path, user_id: int) -> list[tuple]:
    return [
        (
            r["remaining_credit_amount"],
            r["extra_credits"],
            r["plan_id"],
            r["dbt_valid_from"],
            r["dbt_valid_to"],
        )
        for r in query(
            warehouse,
            "select * from credits.users_stored_balances where user_id = "
            f"{int(user_id)} order by dbt_valid_from",
        )
    ]


def stored_on(warehouse: Path, user_id: int, day: dt.date) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(WHAT_WAS_STORED_ON, [user_id, day, day]).fetchall()
    finally:
        con.close()


def snapshot_only(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(warehouse))
    with dbt_environment():
        invocation = dbt_resource().cli(
            ["snapshot", "--select", "users_stored_balances"], raise_on_error=False
        )
    invocation.wait()
    assert invocation.is_successful(), invocation.get_error()


@pytest.fixture(scope="module", autouse=True)
def _manifest():
    prepare_manifest()


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture ledger built on day 1, then day 2 with user 1's stored pools moved."""
    warehouse = tmp_path_factory.mktemp("snapshot") / "warehouse.duckdb"
    write_fixture_warehouse(warehouse)
    with pytest.MonkeyPatch.context() as monkeypatch:
        dbt_build(warehouse, monkeypatch)
        advance_to(warehouse, DAY_2_CUTOFF, DAY_2_ROWS)
        set_stored_pools(warehouse, 1, *DAY_2_STORED_USER_1)
        dbt_build(warehouse, monkeypatch)
    return warehouse


# ------------------------------------------------------------------------------------------------


def test_the_snapshot_keeps_both_versions_of_a_changed_balance_with_their_validity(two_days):
    assert snapshot_versions(two_days, 1) == [
        (498, 50, 2, CUTOFF, DAY_2_CUTOFF),
        (496, 447, 2, DAY_2_CUTOFF, None),
    ]
    # unchanged pools: one version, still current; a new user starts at the cut-off that saw it
    assert snapshot_versions(two_days, 2) == [(49, 0, 4, CUTOFF, None)]
    assert snapshot_versions(two_days, 4) == [(100, 0, None, DAY_2_CUTOFF, None)]


def test_the_snapshot_never_holds_personal_data(two_days):
    columns = {
        r["column_name"]
        for r in query(
            two_days,
            "select column_name from information_schema.columns "
            "where table_schema = 'credits' and table_name = 'users_stored_balances'",
        )
    }
    assert not columns & {"name", "email"}
    assert {"remaining_credit_amount", "extra_credits", "plan_id", "dbt_valid_from"} <= columns


def test_the_history_mart_answers_what_was_stored_on_any_day_next_to_the_ledger(two_days):
    # before the first version: nothing stored is known
    assert stored_on(two_days, 1, D(2025, 3, 30)) == []
    # day 1: what the day-1 cut read; the ledger that day ends after the day-2 rows of 03-31
    # (111 at 01:00 leaves 498 + 50, then 112-114: 0 + 447)
    assert stored_on(two_days, 1, D(2025, 3, 31)) == [(498, 50, 548, CUTOFF, D(2025, 3, 31), 447)]
    # day 2: the moved pools, equal to the ledger's after the capped row 115 (496 + 447)
    assert stored_on(two_days, 1, D(2025, 4, 1)) == [
        (496, 447, 943, DAY_2_CUTOFF, D(2025, 4, 1), 943)
    ]
    # any later day: the latest of both
    assert stored_on(two_days, 1, D(2025, 6, 1)) == [
        (496, 447, 943, DAY_2_CUTOFF, D(2025, 4, 1), 943)
    ]
    # user 2: one stored version; the late commit 150 comes first in write order, so all of the
    # user's rows now count on its day, 03-31, and still end at 49 (row 150 leaves 68, and row
    # 201 continues from the 0 it recorded)
    assert stored_on(two_days, 2, D(2025, 3, 31)) == [(49, 0, 49, CUTOFF, D(2025, 3, 31), 49)]
    assert stored_on(two_days, 2, D(2025, 3, 25)) == []


def test_the_history_mart_has_one_row_per_change_with_contiguous_periods(two_days):
    rows = query(
        two_days,
        "select user_id, valid_from_date, valid_to_date from marts.user_stored_balance_history"
        " order by user_id, valid_from_date",
    )
    assert [(r["user_id"], r["valid_from_date"], r["valid_to_date"]) for r in rows] == [
        (1, D(2025, 3, 31), D(2025, 4, 1)),
        (1, D(2025, 4, 1), None),
        (2, D(2025, 3, 31), None),
        (3, D(2025, 3, 31), None),
        (4, D(2025, 4, 1), None),
    ]


def test_a_run_at_the_same_or_an_earlier_cutoff_records_no_version(two_days, tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(two_days, warehouse)
    versions = "select * from credits.users_stored_balances order by dbt_scd_id"
    before = query(warehouse, versions)
    set_stored_pools(warehouse, 2, 1, 1)
    snapshot_only(warehouse, monkeypatch)  # the day-2 cut-off again
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("update raw.extraction_cutoff set cutoff_at = ?", [T(2025, 3, 31, 12)])
    finally:
        con.close()
    snapshot_only(warehouse, monkeypatch)  # a cut-off before the newest version
    assert query(warehouse, versions) == before
    # a later cut-off does record the change (the test above would pass on a broken snapshot)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("update raw.extraction_cutoff set cutoff_at = ?", [T(2025, 4, 2, 3)])
    finally:
        con.close()
    snapshot_only(warehouse, monkeypatch)
    assert snapshot_versions(warehouse, 2) == [
        (49, 0, 4, CUTOFF, T(2025, 4, 2, 3)),
        (1, 1, 4, T(2025, 4, 2, 3), None),
    ]
