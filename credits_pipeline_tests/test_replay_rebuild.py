"""A dbt step rebuilds its replay only for closed days edited after the replay it took in."""

import datetime as dt

import duckdb
import pytest

from credits_pipeline.transform.replay_rebuild import (
    REPLAY_RELATION,
    edited_days_not_taken_in,
    rebuild_reason,
)
from credits_pipeline.warehouse.raw_tables import record_ledger_edits

REPLAYED_AT = dt.datetime(2025, 4, 1, 3, 5)


@pytest.fixture
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for schema in ("raw", "credits"):
        con.execute(f"create schema {schema}")
    yield con
    con.close()


def _replay_taken_in_at(con, at: dt.datetime) -> None:
    con.execute(f"create table {REPLAY_RELATION} (credit_history_id bigint, replayed_at timestamp)")
    con.execute(f"insert into {REPLAY_RELATION} values (1, ?)", [at])


def test_no_replay_yet_means_no_forced_rebuild_even_with_edits(con):
    record_ledger_edits(con, (dt.date(2025, 3, 2),), REPLAYED_AT, REPLAYED_AT)
    assert edited_days_not_taken_in(con, REPLAY_RELATION) == []


def test_a_warehouse_from_before_the_edit_log_forces_nothing(con):
    _replay_taken_in_at(con, REPLAYED_AT)
    assert edited_days_not_taken_in(con, REPLAY_RELATION) == []


def test_edits_after_the_replay_are_the_days_to_rebuild_and_older_ones_are_not(con):
    _replay_taken_in_at(con, REPLAYED_AT)
    before, after = REPLAYED_AT - dt.timedelta(minutes=1), REPLAYED_AT + dt.timedelta(minutes=1)
    record_ledger_edits(con, (dt.date(2025, 3, 1),), before, before)
    record_ledger_edits(con, (dt.date(2025, 3, 9), dt.date(2025, 3, 2)), after, after)
    record_ledger_edits(con, (dt.date(2025, 3, 9),), after, after)
    assert edited_days_not_taken_in(con, REPLAY_RELATION) == [
        dt.date(2025, 3, 2),
        dt.date(2025, 3, 9),
    ]


def test_the_rebuild_reason_names_the_days_and_the_relation():
    days = [dt.date(2025, 3, d) for d in range(1, 8)]
    reason = rebuild_reason(days, REPLAY_RELATION)
    assert reason is not None
    assert reason.startswith("7 closed ledger day(s) changed in place after credits.int_credit_")
    assert "2025-03-01, 2025-03-02, 2025-03-03, 2025-03-04, 2025-03-05 …" in reason
    assert rebuild_reason([], REPLAY_RELATION) is None
