"""One replay: the pools around every ledger row come from the reconciliation's replay alone.

The reconciliation publishes both pools around every row (`credits.ledger_row_pools`) and the
marts read them (dbt's `int_credit_replay`), so a balance in a mart and in the report cannot
differ. These tests pin the per-row pools on a hand-worked ledger, prove they add up to the
per-user state the report is built from, and prove that the relation a resumed run maintains —
late rows, rewritten and deleted old rows, new users, small batches, a chain of days — is the one
a full replay writes. The mart side of the invariant (latest `user_credit_daily` pools = the
report's ledger pools) runs on the whole graph in test_end_to_end.py and test_dbt_models.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil

import duckdb
import numpy as np
import pytest

from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.fixtures import load_inputs
from credits_pipeline.ledger.reconcile import drop_working_tables, reconcile
from credits_pipeline.ledger.replay import (
    EFFECT_ADD,
    EFFECT_PURCHASE,
    EFFECT_RESET,
    EFFECT_SKIP,
    EFFECT_SPEND,
    NULL_INT,
    RowPools,
    replay,
)
from credits_pipeline.ledger.store import write_reconciliation
from credits_pipeline_tests.dbt_builds import (
    DAY_2_CUTOFF,
    DAY_2_ROWS,
    DAY_3_CUTOFF,
    DAY_3_ROWS,
    advance_to,
    dbt_build,
)
from credits_pipeline_tests.dbt_duckdb import prepare_manifest
from credits_pipeline_tests.harness import assert_same_rows
from credits_pipeline_tests.test_dbt_models import write_fixture_warehouse
from credits_pipeline_tests.test_ledger_resume import (
    CUTOFF,
    ledger_rows,
    random_ledger,
    replay_rows,
)

POOLS_RELATION = f"{rs.STATE_SCHEMA}.{rs.ROW_POOLS_TABLE}"


def test_every_rows_pools_follow_the_contracts_replay_on_a_hand_worked_ledger():
    # user 1: reset 500, spend 120, purchase 300 (pool 300), spend 450 (neither pool covers it:
    # subscription 380 goes first, the purchased pool pays the other 70), overdraft spend 700
    # (only 230 left: 470 written off), an unknown event (skipped), add 40 with a broken snapshot
    # (recorded 10: the replay continues from 10); user 2: an add with a NULL snapshot.
    user = np.array([1, 1, 1, 1, 1, 1, 1, 2], dtype=np.int64)
    ids = np.arange(1, 9, dtype=np.int64)
    effect = np.array(
        [
            *(EFFECT_RESET, EFFECT_SPEND, EFFECT_PURCHASE, EFFECT_SPEND, EFFECT_SPEND),
            *(EFFECT_SKIP, EFFECT_ADD, EFFECT_ADD),
        ],
        dtype=np.int8,
    )
    amount = np.array([500, 120, 300, 450, 700, 9, 40, 25], dtype=np.int64)
    previous = np.array([0, 500, 300, 380, 0, 0, 10, NULL_INT], dtype=np.int64)
    pools = replay(user, ids, effect, amount, previous).pools

    expected = {
        "row_number": [1, 2, 3, 4, 5, 6, 7, 1],
        "subscription_before": [0, 500, NULL_INT, 380, 0, NULL_INT, 10, 0],
        "purchased_before": [0, 0, 0, 300, 230, 0, 0, 0],
        "subscription_after": [500, 380, 380, 0, 0, 0, 50, 25],
        "purchased_after": [0, 0, 300, 230, 0, 0, 0, 0],
        "forfeited": [0, 0, 0, 0, 0, 0, 0, 0],
        "written_off": [0, 0, 0, 0, 470, 0, 0, 0],
    }
    for name in RowPools.FIELDS:
        assert getattr(pools, name).tolist() == expected[name], name


def test_a_reset_forfeits_the_pool_it_continues_from():
    pools = replay(
        np.array([3, 3, 3], dtype=np.int64),
        np.array([1, 2, 3], dtype=np.int64),
        np.array([EFFECT_RESET, EFFECT_SPEND, EFFECT_RESET], dtype=np.int8),
        np.array([100, 30, 100], dtype=np.int64),
        np.array([0, 100, 70], dtype=np.int64),
    ).pools
    assert pools.forfeited.tolist() == [0, 0, 70]
    assert pools.subscription_after.tolist() == [100, 70, 100]


@pytest.mark.parametrize("seed", range(4))
def test_each_users_last_row_and_row_sums_are_exactly_the_state_the_report_is_built_from(seed):
    ledger = random_ledger(seed)
    result = replay_rows(ledger, np.ones(len(ledger["row_id"]), dtype=bool))
    order = np.lexsort((ledger["row_id"], ledger["user_id"]))
    users = ledger["user_id"][order]
    last = np.append(users[1:] != users[:-1], True)
    state = result.state
    np.testing.assert_array_equal(users[last], state.user_id)
    np.testing.assert_array_equal(result.pools.subscription_after[order][last], state.subscription)
    np.testing.assert_array_equal(result.pools.purchased_after[order][last], state.purchased)
    np.testing.assert_array_equal(result.pools.row_number[order][last], state.rows)
    for field, total in (("forfeited", state.forfeited), ("written_off", state.written_off)):
        sums = np.bincount(
            np.searchsorted(state.user_id, ledger["user_id"]),
            weights=getattr(result.pools, field),
            minlength=len(state),
        )
        np.testing.assert_array_equal(sums.astype(np.int64), total, err_msg=field)
    # the ledger is messy enough for the comparison to mean something
    assert result.pools.written_off.sum() > 0 and result.pools.forfeited.sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_the_pools_of_a_replay_resumed_at_any_id_equal_one_full_replays(seed):
    ledger = random_ledger(seed)
    full = replay_rows(ledger, np.ones(len(ledger["row_id"]), dtype=bool))
    cut = int(np.random.default_rng(200 + seed).integers(1, ledger["row_id"].max()))
    before = ledger["row_id"] <= cut
    first = replay_rows(ledger, before)
    second = replay_rows(ledger, ~before, start=first.state)
    for name in RowPools.FIELDS:
        combined = np.empty_like(getattr(full.pools, name))
        combined[before] = getattr(first.pools, name)
        combined[~before] = getattr(second.pools, name)
        np.testing.assert_array_equal(combined, getattr(full.pools, name), err_msg=name)


def _stored_pools(con) -> list[tuple]:
    """The stored pools without the run memory (which run replayed each row)."""
    return con.execute(
        f"select * exclude ({rs.REPLAY_SEQUENCE_COLUMN}) from {POOLS_RELATION}"
        " order by credit_history_id"
    ).fetchall()


def _sequences_by_user(con) -> dict[int, set[int]]:
    rows = con.execute(
        f"select user_id, {rs.REPLAY_SEQUENCE_COLUMN} from {POOLS_RELATION}"
    ).fetchall()
    found: dict[int, set[int]] = {}
    for user_id, sequence in rows:
        found.setdefault(user_id, set()).add(sequence)
    return found


def _full_pools(rows, users, batch_rows=None) -> list[tuple]:
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, rows=rows, users=users)
    result = reconcile(con, CUTOFF, batch_rows=batch_rows)
    write_reconciliation(con, result)
    return _stored_pools(con)


def _reconcile_into(con, rows, users, batch_rows=None):
    load_inputs(con, rows=rows, users=users)
    result = reconcile(con, CUTOFF, keep_state=True, batch_rows=batch_rows)
    write_reconciliation(con, result)
    drop_working_tables(con)
    return result


def test_a_resumed_day_with_late_rewritten_and_deleted_rows_stores_the_pools_a_full_replay_stores():
    everything = ledger_rows(random_ledger(21, n_rows=1500, n_users=30))
    users = [(u, 0, 0) for u in range(1, 33)]
    day_one = [r for r in everything if r["id"] <= 3000]
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    first = _reconcile_into(con, day_one, users)
    assert first.replay_mode == rs.MODE_FULL
    assert len(_stored_pools(con)) == len(day_one)

    late = row(1000, 5, "ai_image_generated", 3, 0)  # a late commit below user 5's last id
    assert all(r["id"] != 1000 for r in everything)
    rewritten = next(r for r in day_one if r["user_id"] == 7 and r["amount"] > 5)
    rewritten = rewritten | {"amount": rewritten["amount"] - 5}
    deleted = next(r for r in day_one if r["user_id"] == 8)
    vanished = 9
    new_user = [row(5000 + k, 31, "custom_credit_purchased", 50, 50 * (k + 1)) for k in range(3)]
    rows_now = [
        rewritten if r["id"] == rewritten["id"] else r
        for r in day_one
        if r["user_id"] != vanished and r["id"] != deleted["id"]
    ]
    rows_now += [late, *[r for r in everything if r["id"] > 3000], *new_user]

    resumed = _reconcile_into(con, rows_now, users)
    assert resumed.replay_mode == rs.MODE_RESUMED
    assert resumed.dirty_users == 4  # 5 (late), 7 (rewritten), 8 (deleted), 9 (vanished)
    assert resumed.replayed_rows < len(rows_now) / 2
    stored = _stored_pools(con)
    assert stored == _full_pools(rows_now, users)
    assert len(stored) == len(rows_now)
    assert not any(p[1] == vanished and p[0] <= 3000 for p in stored)
    # the second run's number is on every row of the users it replayed again from their first row
    # (the four dirty ones: 9's later rows stay; the new user 31) and on the new rows of the users
    # it resumed; every other row keeps the first run's number: what int_credit_replay rebuilds by
    sequences = _sequences_by_user(con)
    replayed_again = {5, 7, 8, vanished, 31}
    first_day_users = {r["user_id"] for r in day_one} - replayed_again
    with_new_rows = {r["user_id"] for r in everything if r["id"] > 3000} - replayed_again
    expected = {u: {2} for u in replayed_again | (with_new_rows - first_day_users)}
    expected |= {u: {1, 2} for u in with_new_rows & first_day_users}
    expected |= {u: {1} for u in first_day_users - with_new_rows}
    assert sequences == expected
    assert {1, 2} in expected.values()  # resumed users keep their earlier rows' number


def test_a_chain_of_resumed_days_in_small_batches_keeps_the_pools_of_one_full_replay():
    everything = ledger_rows(random_ledger(22, n_rows=900, n_users=15))
    users = [(u, 0, 0) for u in range(1, 16)]
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    for cut in itertools.chain((600, 601, 1500, 2200), [max(r["id"] for r in everything)]):
        seen = [r for r in everything if r["id"] <= cut]
        _reconcile_into(con, seen, users, batch_rows=17)
        assert _stored_pools(con) == _full_pools(seen, users), cut
    mode = con.execute(f"select mode from {rs.STATE_SCHEMA}.{rs.CHECKPOINT_TABLE}").fetchone()[0]
    assert mode == rs.MODE_RESUMED


def test_a_warehouse_whose_state_lacks_the_pools_relation_replays_everything_again():
    rows = ledger_rows(random_ledger(23, n_rows=300, n_users=8))
    users = [(u, 0, 0) for u in range(1, 9)]
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    _reconcile_into(con, rows, users)
    con.execute(f"drop table {POOLS_RELATION}")  # a warehouse from before the relation existed
    again = _reconcile_into(con, rows, users)
    assert again.replay_mode == rs.MODE_FULL
    assert _stored_pools(con) == _full_pools(rows, users)


def test_a_warehouse_that_lost_its_replay_state_numbers_the_next_replay_above_what_readers_kept():
    rows = ledger_rows(random_ledger(24, n_rows=200, n_users=6))
    users = [(u, 0, 0) for u in range(1, 7)]
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    assert _reconcile_into(con, rows, users).replay_mode == rs.MODE_FULL
    assert all(numbers == {1} for numbers in _sequences_by_user(con).values())
    # a reader kept rows numbered up to 5, then the state was lost: numbering again from 1 would
    # let the reader take replayed rows for the ones it kept
    (reader,) = rs.SEQUENCE_READERS
    con.execute(f"create table {reader} as select 5 as {rs.REPLAY_SEQUENCE_COLUMN}")
    for name in rs.PERSISTED_TABLES:
        con.execute(f"drop table {rs.STATE_SCHEMA}.{name}")
    assert _reconcile_into(con, rows, users).replay_mode == rs.MODE_FULL
    assert all(numbers == {6} for numbers in _sequences_by_user(con).values())
    # and with the state back, each run counts on from the checkpoint
    assert _reconcile_into(con, rows, users).replay_mode == rs.MODE_RESUMED
    checkpoint = f"select {rs.REPLAY_SEQUENCE_COLUMN} from {rs.STATE_SCHEMA}.{rs.CHECKPOINT_TABLE}"
    assert con.execute(checkpoint).fetchone()[0] == 7


def test_skipped_rows_keep_both_pools_and_have_no_subscription_before():
    pools = replay(
        np.array([4, 4], dtype=np.int64),
        np.array([1, 2], dtype=np.int64),
        np.array([EFFECT_PURCHASE, EFFECT_SKIP], dtype=np.int8),
        np.array([80, 5], dtype=np.int64),
        np.array([80, 0], dtype=np.int64),
    ).pools
    assert pools.subscription_before.tolist() == [NULL_INT, NULL_INT]
    assert pools.purchased_after.tolist() == [80, 80]
    assert pools.purchased_before.tolist() == [0, 80]


# ------------------------------------------------------------------------------------------------
# The marts read the one replay: dbt around the reconciliation, day after day


BALANCES_TOLD_TWICE = """
with latest_day as (
    select user_id, closing_subscription_balance, closing_purchased_balance,
        row_number() over (partition by user_id order by balance_date desc) as newest_first
    from marts.user_credit_daily
)
select r.user_id
from marts.user_balance_reconciliation as r
left join latest_day as d on d.user_id = r.user_id and d.newest_first = 1
where coalesce(d.closing_subscription_balance, 0) <> r.ledger_subscription_balance
    or coalesce(d.closing_purchased_balance, 0) <> r.ledger_purchased_balance
"""
COMPARED = {
    "credits.int_credit_replay": "credit_history_id",
    "marts.user_credit_daily": "user_id, balance_date",
    "marts.user_credit_trends": "user_id",
    "marts.plan_utilization": "all",
    "marts.service_efficiency": "all",
}


def _rows(warehouse, relation: str, order_by: str) -> list[tuple]:
    """The relation's rows, without the run memory (which run last replayed each row)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        columns = [c[0] for c in con.execute(f"select * from {relation} limit 0").description]
        kept = ", ".join(c for c in columns if c != rs.REPLAY_SEQUENCE_COLUMN)
        return con.execute(f"select {kept} from {relation} order by {order_by}").fetchall()
    finally:
        con.close()


def _rebuilt_from_scratch(warehouse, tmp_path, monkeypatch):
    """A copy of the warehouse with the replay's stored state and the replayed ledger
    (int_credit_replay, kept per user) dropped, built again: the reconciliation replays the whole
    ledger and dbt builds the model whole."""
    copy = tmp_path / f"scratch_{warehouse.stem}.duckdb"
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    try:
        stored = [f"{rs.STATE_SCHEMA}.{name}" for name in rs.PERSISTED_TABLES]
        for relation in (*stored, *KEPT_PER_USER):
            con.execute(f"drop table if exists {relation}")
    finally:
        con.close()
    dbt_build(copy, monkeypatch)
    return copy


# The models kept per user: the column a marked row carries as -7 (not one the model compares to
# find what to replace), and the key of a row.
KEPT_PER_USER = {
    "credits.int_credit_replay": ("recorded_pool", "credit_history_id"),
    "marts.user_credit_daily": ("credits_spent", "user_id, balance_date"),
}


def _rows_kept_by_the_next_build(
    warehouse, tmp_path, monkeypatch, cutoff, rows
) -> dict[str, set[tuple]]:
    """On a copy of the warehouse: every row of the models kept per user marked, the next day
    (`rows` up to `cutoff`) built; by model, the keys of the rows that still carry the mark,
    which the build kept as they were instead of writing them again."""
    copy = tmp_path / f"marked_{warehouse.stem}.duckdb"
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    try:
        for relation, (column, _) in KEPT_PER_USER.items():
            con.execute(f"update {relation} set {column} = -7")
    finally:
        con.close()
    advance_to(copy, cutoff, rows)
    dbt_build(copy, monkeypatch)
    con = duckdb.connect(str(copy), read_only=True)
    try:
        return {
            relation: set(
                con.execute(f"select {key} from {relation} where {column} = -7").fetchall()
            )
            for relation, (column, key) in KEPT_PER_USER.items()
        }
    finally:
        con.close()


def _keys_of_user(warehouse, user_id: int) -> dict[str, set[tuple]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            relation: set(
                con.execute(f"select {key} from {relation} where user_id = ?", [user_id]).fetchall()
            )
            for relation, (_, key) in KEPT_PER_USER.items()
        }
    finally:
        con.close()


def test_a_user_whose_every_ledger_row_vanished_leaves_the_models_kept_per_user(
    tmp_path, monkeypatch
):
    prepare_manifest()
    warehouse = tmp_path / "vanished.duckdb"
    write_fixture_warehouse(warehouse)
    dbt_build(warehouse, monkeypatch)
    con = duckdb.connect(str(warehouse))
    try:
        for table in ("raw.credit_histories", "raw.credit_histories__open"):
            con.execute(f"delete from {table} where user_id = 2")
    finally:
        con.close()
    dbt_build(warehouse, monkeypatch)
    for relation in KEPT_PER_USER:
        users = {r[0] for r in _rows(warehouse, f"(select distinct user_id from {relation})", "1")}
        assert users == {1}, relation
    scratch = _rebuilt_from_scratch(warehouse, tmp_path, monkeypatch)
    for relation, order_by in COMPARED.items():
        assert_same_rows(
            _rows(warehouse, relation, order_by), _rows(scratch, relation, order_by), relation
        )


def test_marts_built_day_after_day_on_the_resumed_replay_equal_a_build_from_scratch(
    tmp_path, monkeypatch
):
    prepare_manifest()
    warehouse = tmp_path / "days.duckdb"
    write_fixture_warehouse(warehouse)
    dbt_build(warehouse, monkeypatch)
    advance_to(warehouse, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(warehouse, monkeypatch)
    checkpoint = f"select mode from {rs.STATE_SCHEMA}.{rs.CHECKPOINT_TABLE}"
    assert _rows(warehouse, f"({checkpoint})", "1") == [(rs.MODE_RESUMED,)]

    replay = {r[0]: r for r in _rows(warehouse, "credits.int_credit_replay", "credit_history_id")}
    # the future-dated row counts on the cut-off's day; the overdraft writes off 100
    assert replay[115][10] == dt.date(2025, 4, 1)
    assert replay[402][18] == 100
    # the late commit is replayed in its place: user 2's rows after it are numbered after it
    assert [replay[i][11] for i in (150, 201, 206)] == [1, 2, 7]
    assert _rows(warehouse, f"({BALANCES_TOLD_TWICE})", "1") == []
    scratch = _rebuilt_from_scratch(warehouse, tmp_path, monkeypatch)
    for relation, order_by in COMPARED.items():
        resumed = _rows(warehouse, relation, order_by)
        assert resumed, relation
        assert_same_rows(resumed, _rows(scratch, relation, order_by), relation)

    # day 3: the row dated in the future is still after the cut-off, so it moves to the new day.
    # The models kept per user keep user 2 (nothing new) as it was; rebuild user 1 whole (no new
    # row, but one dated after the last kept day: the day it counts on follows the cut-off); and
    # extend user 4, whose new rows the reconciliation replayed after its kept ones: the replayed
    # ledger keeps its rows 401-402 and appends 403-404, the daily mart keeps 03-31 and rebuilds
    # 04-01 (where the late 403 counts) and the new 04-02.
    user_2 = _keys_of_user(warehouse, 2)
    kept = _rows_kept_by_the_next_build(warehouse, tmp_path, monkeypatch, DAY_3_CUTOFF, DAY_3_ROWS)
    assert kept == {
        "credits.int_credit_replay": user_2["credits.int_credit_replay"] | {(401,), (402,)},
        "marts.user_credit_daily": user_2["marts.user_credit_daily"] | {(4, dt.date(2025, 3, 31))},
    }
    advance_to(warehouse, DAY_3_CUTOFF, DAY_3_ROWS)
    dbt_build(warehouse, monkeypatch)
    replay = {r[0]: r for r in _rows(warehouse, "credits.int_credit_replay", "credit_history_id")}
    assert replay[115][10] == dt.date(2025, 4, 2)
    assert _rows(warehouse, f"({BALANCES_TOLD_TWICE})", "1") == []
    scratch = _rebuilt_from_scratch(warehouse, tmp_path, monkeypatch)
    for relation, order_by in COMPARED.items():
        assert_same_rows(
            _rows(warehouse, relation, order_by), _rows(scratch, relation, order_by), relation
        )
