"""The ledger replay (contract section 2) on small hand-built ledgers.

Each test is a few rows where the right answer can be read off; together they pin the replay's
pool arithmetic, "continuing after a row", forfeiture, overdraft write-offs, chain breaks and the
reconciliation row built from the final pools.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.fixtures import load_inputs
from credits_pipeline.ledger.reconcile import reconcile
from credits_pipeline.ledger.replay import (
    EFFECT_ADD,
    EFFECT_PURCHASE,
    EFFECT_RESET,
    EFFECT_SPEND,
    FLAG_CHAIN_BREAK,
    NULL_INT,
    replay,
    resolve_effects,
    sort_order,
)
from credits_pipeline.ledger.store import read_reports

CUTOFF = dt.datetime(2025, 6, 1)


def run(rows, users=((1, 0, 0),), **content):
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, rows=rows, users=users, **content)
    return read_reports(con, reconcile(con, CUTOFF))


def user_row(result, user_id):
    return next(r for r in result.reconciliation.to_pylist() if r["user_id"] == user_id)


def rules(result, rule):
    return [a for a in result.anomalies.to_pylist() if a["rule"] == rule]


def test_a_consistent_ledger_replays_to_the_stored_pools_without_any_anomaly():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 500, 0),
            row(2, 1, "ai_image_generated", 1, 500),
            row(3, 1, "custom_credit_purchased", 200, 200),
            row(4, 1, "monthly_credits_added", 100, 499),
            row(5, 1, "idea_discovered", 15, 599),
        ],
        users=[(1, 584, 200)],
    )
    assert result.anomalies.num_rows == 0
    rec = user_row(result, 1)
    assert rec["ledger_subscription_balance"] == 584
    assert rec["ledger_purchased_balance"] == 200
    assert rec["status"] == rc.STATUS_OK
    assert rec["drift"] == 0 and rec["chain_breaks"] == 0
    assert rec["first_break_history_id"] is None


def test_a_reset_forfeits_the_remaining_subscription_pool_without_a_chain_break():
    result = run(
        [
            row(1, 1, "subscription_amount_paid", 1000, 0),
            row(2, 1, "idea_discovered", 15, 1000),
            row(3, 1, "subscription_amount_paid", 1000, 985),
        ],
        users=[(1, 1000, 0)],
    )
    assert rules(result, rc.CHAIN_BREAK) == []
    rec = user_row(result, 1)
    assert rec["forfeited_credits"] == 985
    assert rec["ledger_subscription_balance"] == 1000
    assert rec["status"] == rc.STATUS_OK


def test_a_spend_larger_than_the_subscription_pool_is_drawn_from_the_purchased_pool():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 10, 0),
            row(2, 1, "custom_credit_purchased", 100, 100),
            row(3, 1, "idea_discovered", 15, 10),
        ],
        users=[(1, 10, 85)],
    )
    assert result.anomalies.num_rows == 0
    rec = user_row(result, 1)
    assert (rec["ledger_subscription_balance"], rec["ledger_purchased_balance"]) == (10, 85)


def test_a_purchase_row_records_the_purchased_pool_after_the_purchase():
    result = run(
        [
            row(1, 1, "custom_credit_purchased", 100, 100),
            row(2, 1, "custom_credit_purchased", 50, 150),
            row(3, 1, "custom_credit_purchased", 50, 50),  # recorded the amount, not the pool
        ],
        users=[(1, 0, 200)],
    )
    breaks = rules(result, rc.CHAIN_BREAK)
    assert [(b["credit_history_id"], b["expected"], b["actual"]) for b in breaks] == [
        (3, "200", "50")
    ]
    # continuing after the row: the purchased pool takes the recorded 50
    assert user_row(result, 1)["ledger_purchased_balance"] == 50


def test_a_spend_short_of_both_pools_zeroes_the_subscription_and_takes_the_rest_from_purchases():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 10, 0),
            row(2, 1, "custom_credit_purchased", 12, 12),
            row(3, 1, "idea_discovered", 15, 10),
        ],
        users=[(1, 0, 7)],
    )
    rec = user_row(result, 1)
    assert (rec["ledger_subscription_balance"], rec["ledger_purchased_balance"]) == (0, 7)
    assert rules(result, rc.OVERDRAFT_WRITEOFF) == []
    assert rec["written_off_credits"] == 0


def test_an_overdraft_writes_off_the_credits_that_were_not_there():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 5, 0),
            row(2, 1, "custom_credit_purchased", 4, 4),
            row(3, 1, "idea_discovered", 15, 5),
        ],
        users=[(1, 0, 0)],
    )
    (over,) = rules(result, rc.OVERDRAFT_WRITEOFF)
    assert over["credit_history_id"] == 3
    assert (over["expected"], over["actual"]) == ("9", "15")
    assert over["credits"] == 6
    assert user_row(result, 1)["written_off_credits"] == 6


def test_the_overdraft_test_uses_the_recorded_subscription_pool_plus_the_replayed_purchases():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 5, 0),
            # records 20 in the subscription pool (a chain break), then spends 15 out of it
            row(2, 1, "idea_discovered", 15, 20),
        ],
        users=[(1, 5, 0)],
    )
    assert [b["credit_history_id"] for b in rules(result, rc.CHAIN_BREAK)] == [2]
    assert rules(result, rc.OVERDRAFT_WRITEOFF) == []
    assert user_row(result, 1)["ledger_subscription_balance"] == 5


def test_a_chain_break_is_reported_once_and_the_replay_continues_from_the_recorded_pool():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 500, 0),
            row(2, 1, "idea_discovered", 15, 400),  # break: expected 500
            row(3, 1, "idea_discovered", 15, 385),  # consistent with the recorded 400
            row(4, 1, "idea_discovered", 15, 300),  # break: expected 370
        ],
        users=[(1, 285, 0)],
    )
    breaks = rules(result, rc.CHAIN_BREAK)
    assert [(b["credit_history_id"], b["expected"], b["actual"]) for b in breaks] == [
        (2, "500", "400"),
        (4, "370", "300"),
    ]
    rec = user_row(result, 1)
    assert rec["chain_breaks"] == 2
    assert rec["first_break_history_id"] == 2
    assert rec["status"] == rc.STATUS_BROKEN_CHAIN


def test_forfeited_credits_count_the_recorded_pool_before_a_reset():
    result = run(
        [
            row(1, 1, "subscription_amount_paid", 100, 0),
            row(2, 1, "subscription_amount_paid", 100, 70),  # break (expected 100), forfeits 70
        ],
        users=[(1, 100, 0)],
    )
    assert user_row(result, 1)["forfeited_credits"] == 70


def test_a_refund_adds_back_to_the_subscription_pool():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 100, 0),
            row(2, 1, "faceless_video_generated", 20, 100, creditable=("faceless", 1)),
            row(3, 1, "refunded_credits", 20, 80, creditable=("faceless", 1)),
        ],
        users=[(1, 100, 0)],
        facelesses=[{"id": 1, "user_id": 1, "video_id": 1}],
        videos=[{"id": 1, "user_id": 1, "type": "faceless", "status": "failed"}],
    )
    assert result.anomalies.num_rows == 0
    assert user_row(result, 1)["ledger_subscription_balance"] == 100


def test_an_event_outside_the_catalog_follows_its_event_type():
    events = [
        {
            "id": 1,
            "name": "subscribe_to_trial",
            "type": 1,
            "calculation_type": "fixed",
            "value": 500.0,
            "min_amount": None,
        },
        {
            "id": 90,
            "name": "loyalty_bonus",
            "type": 1,
            "calculation_type": "fixed",
            "value": 7.0,
            "min_amount": None,
        },
        {
            "id": 91,
            "name": "voice_clone",
            "type": 2,
            "calculation_type": "fixed",
            "value": 9.0,
            "min_amount": None,
        },
    ]
    rows = [
        row(1, 1, 1, 500, 0, event_type=1),
        row(2, 1, 90, 7, 500, event_type=1),
        row(3, 1, 91, 9, 507, event_type=2),
        row(4, 1, 99, 3, 498, event_type=2),  # unknown event: a spend by event_type
        row(5, 1, 99, 3, 495, event_type=7),  # unknown effect: skipped by the replay
    ]
    con = duckdb.connect()
    load_inputs(con, rows=rows, users=[(1, 495, 0)], events=events)
    result = read_reports(con, reconcile(con, CUTOFF))
    assert rules(result, rc.CHAIN_BREAK) == []
    assert user_row(result, 1)["ledger_subscription_balance"] == 495


def test_a_catalog_spend_written_with_event_type_1_is_still_replayed_as_a_spend():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 500, 0),
            row(2, 1, "idea_discovered", 15, 500, event_type=1),
        ],
        users=[(1, 485, 0)],
    )
    assert user_row(result, 1)["ledger_subscription_balance"] == 485
    assert [a["rule"] for a in result.anomalies.to_pylist()] == [rc.EVENT_TYPE_MISMATCH]


def test_orphan_users_are_replayed_but_get_no_reconciliation_row_nor_drift():
    result = run(
        [
            row(1, 7, "subscribe_to_trial", 500, 0),
            row(2, 7, "idea_discovered", 15, 400),
        ],
        users=[(1, 0, 0)],
    )
    assert [r["user_id"] for r in result.reconciliation.to_pylist()] == [1]
    assert rules(result, rc.BALANCE_DRIFT) == []
    assert [b["credit_history_id"] for b in rules(result, rc.CHAIN_BREAK)] == [2]
    assert {a["rule"] for a in result.anomalies.to_pylist()} == {rc.CHAIN_BREAK, rc.ORPHAN_USER}


def test_a_user_without_ledger_rows_has_zero_pools_and_zero_counters():
    result = run([], users=[(1, None, 0), (2, 3, 0)])
    one, two = result.reconciliation.to_pylist()
    assert one == {
        "user_id": 1,
        "ledger_subscription_balance": 0,
        "recorded_subscription_balance": 0,
        "ledger_purchased_balance": 0,
        "recorded_purchased_balance": 0,
        "drift": 0,
        "chain_breaks": 0,
        "first_break_history_id": None,
        "forfeited_credits": 0,
        "written_off_credits": 0,
        "status": rc.STATUS_OK,
    }
    assert two["status"] == rc.STATUS_DRIFT and two["drift"] == 3


def test_balance_drift_reports_one_row_per_differing_pool_and_status_drift_even_when_they_cancel():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 100, 0),
            row(2, 1, "custom_credit_purchased", 50, 50),
        ],
        users=[(1, 120, 30)],
    )
    drift = rules(result, rc.BALANCE_DRIFT)
    assert [
        (d["expected"], d["actual"], d["credit_history_id"], d["entity_type"], d["entity_id"])
        for d in drift
    ] == [
        ("100", "120", None, "user", 1),
        ("50", "30", None, "user", 1),
    ]
    assert "subscription" in drift[0]["detail"] and "purchased" in drift[1]["detail"]
    rec = user_row(result, 1)
    assert rec["drift"] == 0
    assert rec["status"] == rc.STATUS_DRIFT


def test_the_replay_accepts_rows_in_any_order_and_sorts_by_user_then_id():
    user_id = np.array([2, 1, 1, 2, 1], dtype=np.int64)
    row_id = np.array([4, 3, 1, 2, 5], dtype=np.int64)
    effect = np.array(
        [EFFECT_SPEND, EFFECT_ADD, EFFECT_RESET, EFFECT_PURCHASE, EFFECT_SPEND], dtype=np.int8
    )
    amount = np.array([5, 10, 100, 20, 30], dtype=np.int64)
    previous = np.array([0, 100, 0, 20, 110], dtype=np.int64)
    order = sort_order(user_id, row_id)
    assert row_id[order].tolist() == [1, 3, 5, 2, 4]
    res = replay(user_id, row_id, effect, amount, previous)
    assert res.state.user_id.tolist() == [1, 2]
    assert res.state.subscription.tolist() == [80, 0]
    assert res.state.purchased.tolist() == [0, 15]
    assert not (res.flags & FLAG_CHAIN_BREAK).any()


def test_a_null_previous_amount_is_a_chain_break_and_the_replay_continues_from_what_it_expected():
    res = replay(
        np.array([1, 1, 1]),
        np.array([1, 2, 3]),
        np.array([EFFECT_RESET, EFFECT_SPEND, EFFECT_SPEND], dtype=np.int8),
        np.array([100, 10, 10]),
        np.array([0, NULL_INT, 90]),
    )
    assert (res.flags & FLAG_CHAIN_BREAK).tolist() == [0, 1, 0]
    assert res.state.subscription.tolist() == [80]


def test_effects_come_from_the_catalog_then_from_event_type():
    effects = resolve_effects(
        credit_events_id=np.array([1, 2, 3, 3, 3]),
        event_type=np.array([2, 1, 1, 2, 9]),
        event_ids=np.array([2, 1]),
        event_effects=np.array([EFFECT_PURCHASE, EFFECT_RESET], dtype=np.int8),
    )
    assert effects.tolist() == [EFFECT_RESET, EFFECT_PURCHASE, EFFECT_ADD, EFFECT_SPEND, 0]


def test_replay_rejects_duplicate_ids():
    with pytest.raises(ValueError):
        replay(
            np.array([1, 1]),
            np.array([5, 5]),
            np.array([2, 2], dtype=np.int8),
            np.array([1, 1]),
            np.array([0, 1]),
            order=np.array([0, 1]),
        )
