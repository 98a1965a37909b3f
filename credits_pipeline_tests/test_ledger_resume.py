"""Resuming the ledger replay from each user's state equals replaying the whole history.

The daily reconciliation replays only the rows above the previous run's last id, starting every
user from the state it ended in (`ReplayState`). These tests cut random ledgers — chain breaks,
NULL snapshots, resets, purchases, overdrafts, skipped rows, NULL and out-of-order timestamps —
at arbitrary ids, resume once or several times, and compare every row flag and every user's
final state with one full replay.
"""

from __future__ import annotations

import datetime as dt
import itertools

import duckdb
import numpy as np
import pytest

from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.fixtures import CATALOG_EVENT_IDS, catalog_events, load_inputs
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.reconcile import drop_working_tables, reconcile
from credits_pipeline.ledger.replay import (
    EFFECT_ADD,
    EFFECT_PURCHASE,
    EFFECT_RESET,
    EFFECT_SKIP,
    EFFECT_SPEND,
    NULL_INT,
    ReplayState,
    replay,
)
from credits_pipeline.ledger.store import read_reports, write_reconciliation


def random_ledger(seed: int, n_rows: int = 4000, n_users: int = 60) -> dict[str, np.ndarray]:
    """A messy ledger: ids ascending in write order, users interleaved, snapshots mostly right."""
    rng = np.random.default_rng(seed)
    user_id = rng.integers(1, n_users + 1, n_rows).astype(np.int64)
    row_id = np.arange(1, n_rows + 1, dtype=np.int64) * 3  # gaps, like a real auto-increment
    effect = rng.choice(
        np.array([EFFECT_RESET, EFFECT_ADD, EFFECT_PURCHASE, EFFECT_SPEND, EFFECT_SKIP], np.int8),
        n_rows,
        p=[0.05, 0.15, 0.1, 0.65, 0.05],
    )
    amount = rng.integers(1, 400, n_rows).astype(np.int64)
    previous = np.empty(n_rows, dtype=np.int64)
    # A consistent snapshot most of the time (pools tracked per user), broken on purpose sometimes.
    sub: dict[int, int] = {}
    pur: dict[int, int] = {}
    for i in range(n_rows):
        u, e, a = int(user_id[i]), int(effect[i]), int(amount[i])
        s, p = sub.get(u, 0), pur.get(u, 0)
        previous[i] = p + a if e == EFFECT_PURCHASE else s
        if e == EFFECT_RESET:
            s = a
        elif e == EFFECT_ADD:
            s += a
        elif e == EFFECT_PURCHASE:
            p += a
        elif e == EFFECT_SPEND:
            if s >= a:
                s -= a
            elif p >= a:
                p -= a
            else:
                p, s = max(p - (a - s), 0), 0
        sub[u], pur[u] = s, p
    broken = rng.random(n_rows) < 0.03
    previous[broken] += rng.integers(-50, 50, int(broken.sum()))
    previous[rng.random(n_rows) < 0.01] = NULL_INT
    created_s = 1_700_000_000 + row_id * 60 + rng.integers(-600, 600, n_rows)
    created_s[rng.random(n_rows) < 0.02] = NULL_INT
    return {
        "user_id": user_id,
        "row_id": row_id,
        "effect": effect,
        "amount": amount,
        "previous": previous,
        "created_s": created_s.astype(np.int64),
    }


def replay_rows(ledger: dict[str, np.ndarray], mask: np.ndarray, start: ReplayState | None = None):
    return replay(
        ledger["user_id"][mask],
        ledger["row_id"][mask],
        ledger["effect"][mask],
        ledger["amount"][mask],
        ledger["previous"][mask],
        ledger["created_s"][mask],
        start=start,
    )


def assert_same_state(a: ReplayState, b: ReplayState) -> None:
    for name in ReplayState.FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("seed", range(6))
def test_resuming_at_any_id_equals_one_full_replay(seed):
    ledger = random_ledger(seed)
    full = replay_rows(ledger, np.ones(len(ledger["row_id"]), dtype=bool))
    cut = int(np.random.default_rng(100 + seed).integers(1, ledger["row_id"].max()))
    before = ledger["row_id"] <= cut
    first = replay_rows(ledger, before)
    second = replay_rows(ledger, ~before, start=first.state)

    assert_same_state(first.state.advanced(second.state), full.state)
    # every row's flags and details, whichever run replayed it
    for name in ("flags", "expected_previous", "available", "previous_created_s"):
        combined = np.empty_like(getattr(full, name))
        combined[before] = getattr(first, name)
        combined[~before] = getattr(second, name)
        np.testing.assert_array_equal(combined, getattr(full, name), err_msg=name)
    # the test would notice a resume that started from zero
    assert np.any(full.flags != 0)


def test_a_chain_of_daily_resumes_equals_one_full_replay():
    ledger = random_ledger(7, n_rows=6000)
    full = replay_rows(ledger, np.ones(len(ledger["row_id"]), dtype=bool))
    state = ReplayState.empty()
    flags = np.zeros_like(full.flags)
    cuts = [0, 900, 901, 2500, 2500, 4000, 17_999, int(ledger["row_id"].max())]
    for low, high in itertools.pairwise(cuts):
        day = (ledger["row_id"] > low) & (ledger["row_id"] <= high)
        result = replay_rows(ledger, day, start=state)
        flags[day] = result.flags
        state = state.advanced(result.state)
    assert_same_state(state, full.state)
    np.testing.assert_array_equal(flags, full.flags)


def test_resuming_from_zero_state_differs_from_resuming_from_the_real_one():
    """The state carries the pools: forgetting it changes the outcome (so the tests above can
    fail)."""
    ledger = random_ledger(3)
    full = replay_rows(ledger, np.ones(len(ledger["row_id"]), dtype=bool))
    later = ledger["row_id"] > 6000
    forgetful = replay_rows(ledger, later)
    assert not np.array_equal(forgetful.flags, full.flags[later])


def test_a_resumed_replay_refuses_a_row_below_the_users_last_id():
    ledger = random_ledger(1, n_rows=200, n_users=5)
    state = replay_rows(ledger, np.ones(200, dtype=bool)).state
    with pytest.raises(ValueError, match="above each user's last id"):
        replay_rows(ledger, ledger["row_id"] < 30, start=state)


def test_a_user_dropped_from_the_state_is_replayed_again_from_its_first_row():
    ledger = random_ledger(2, n_rows=1000, n_users=8)
    everything = np.ones(1000, dtype=bool)
    full = replay_rows(ledger, everything)
    first = replay_rows(ledger, ledger["row_id"] <= 1500)
    dirty = np.array([3, 5], dtype=np.int64)
    again = (ledger["row_id"] > 1500) | np.isin(ledger["user_id"], dirty)
    resumed = replay_rows(ledger, again, start=first.state.without(dirty))
    assert_same_state(first.state.advanced(resumed.state), full.state)


def test_a_state_read_back_in_any_order_is_the_same_state():
    state = replay_rows(random_ledger(4, 500, 20), np.ones(500, dtype=bool)).state
    shuffled = np.random.default_rng(0).permutation(len(state))
    again = ReplayState.from_columns({k: v[shuffled] for k, v in state.columns().items()})
    assert_same_state(again, state)
    with pytest.raises(ValueError, match="each user once"):
        ReplayState.from_columns(
            {k: np.concatenate([v, v[:1]]) for k, v in state.columns().items()}
        )


# -- the reconciliation, resuming from the state it stored in the warehouse ----------------------

CUTOFF = dt.datetime(2025, 6, 1)
EVENTS_BY_EFFECT = {
    EFFECT_RESET: "subscription_amount_paid",
    EFFECT_ADD: "monthly_credits_added",
    EFFECT_PURCHASE: "custom_credit_purchased",
    EFFECT_SPEND: "ai_image_generated",
}


def ledger_rows(ledger: dict[str, np.ndarray]) -> list[dict]:
    """The random ledger as the reconciliation's input rows (unknown effect: an unknown event)."""
    rows = []
    for i in range(len(ledger["row_id"])):
        e = int(ledger["effect"][i])
        created = ledger["created_s"][i]
        rows.append(
            row(
                int(ledger["row_id"][i]),
                int(ledger["user_id"][i]),
                EVENTS_BY_EFFECT.get(e, 999),
                int(ledger["amount"][i]),
                None if ledger["previous"][i] == NULL_INT else int(ledger["previous"][i]),
                event_type=7 if e == EFFECT_SKIP else None,
                created_at=None
                if created == NULL_INT
                else dt.datetime.fromtimestamp(int(created), dt.UTC).replace(tzinfo=None),
            )
        )
    return rows


def reconcile_into(con, rows, users, keep_state=True, cutoff=CUTOFF, events=None):
    load_inputs(con, rows=rows, users=users, events=events)
    result = reconcile(con, cutoff, keep_state=keep_state)
    write_reconciliation(con, result)
    reports = read_reports(con, result)
    drop_working_tables(con)
    return reports


def full_reconciliation(rows, users, events=None, cutoff=CUTOFF):
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, rows=rows, users=users, events=events)
    return read_reports(con, reconcile(con, cutoff))


def assert_same_report(resumed, full):
    assert resumed.reconciliation.to_pylist() == full.reconciliation.to_pylist()
    assert resumed.anomalies.to_pylist() == full.anomalies.to_pylist()
    assert resumed.result.ledger_rows == full.result.ledger_rows


@pytest.fixture
def warehouse_con():
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    yield con
    con.close()


def test_the_next_days_reconciliation_resumes_and_reports_exactly_what_a_full_replay_reports(
    warehouse_con,
):
    everything = ledger_rows(random_ledger(11, n_rows=1500, n_users=30))
    users = [(u, 100, 0) for u in range(1, 33)]
    day_one = [r for r in everything if r["id"] <= 3000]
    first = reconcile_into(warehouse_con, day_one, users)
    assert first.result.replay_mode == rs.MODE_FULL and "no previous" in first.result.replay_reason

    day_two = [r for r in everything if r["id"] > 3000]
    late = row(1000, 5, "ai_image_generated", 3, 0)  # id 1000 was never used: a late commit
    assert all(r["id"] != 1000 for r in everything)
    changed = next(r for r in day_one if r["user_id"] == 7) | {"previous_amount": 123_456}
    vanished = 9
    new_user = [row(5000 + k, 31, "custom_credit_purchased", 50, 50 * (k + 1)) for k in range(3)]
    rows_now = (
        [changed if r["id"] == changed["id"] else r for r in day_one if r["user_id"] != vanished]
        + [late]
        + day_two
        + new_user
    )

    resumed = reconcile_into(warehouse_con, rows_now, users)
    full = full_reconciliation(rows_now, users)
    assert_same_report(resumed, full)
    assert resumed.result.replay_mode == rs.MODE_RESUMED
    # the late row's, the changed row's and the vanished user
    assert resumed.result.dirty_users == 3
    dirty_rows = sum(1 for r in rows_now if r["user_id"] in (5, 7) and r["id"] <= 3000)
    assert resumed.result.replayed_rows == len(day_two) + len(new_user) + dirty_rows
    assert resumed.result.replayed_rows < len(rows_now) / 2
    # the stored reports are the resumed ones, row for row
    stored = warehouse_con.execute(
        f"select * from {rc.MARTS_SCHEMA}.{rc.RECONCILIATION_TABLE} order by user_id"
    ).fetch_arrow_table()
    assert stored.to_pylist() == full.reconciliation.to_pylist()


def test_a_rerun_on_unchanged_data_replays_no_row_and_changes_nothing(warehouse_con):
    rows = ledger_rows(random_ledger(12, n_rows=600, n_users=12))
    users = [(u, 0, 0) for u in range(1, 13)]
    first = reconcile_into(warehouse_con, rows, users)
    state_before = warehouse_con.execute(
        f"select * from {rs.STATE_SCHEMA}.{rs.STATE_TABLE} order by user_id"
    ).fetchall()
    again = reconcile_into(warehouse_con, rows, users)
    assert again.result.replay_mode == rs.MODE_RESUMED and again.result.replayed_rows == 0
    assert_same_report(again, first)
    state_after = warehouse_con.execute(
        f"select * from {rs.STATE_SCHEMA}.{rs.STATE_TABLE} order by user_id"
    ).fetchall()
    assert state_after == state_before


def test_a_changed_event_catalog_or_an_earlier_cutoff_replays_everything_again(warehouse_con):
    rows = ledger_rows(random_ledger(13, n_rows=400, n_users=10))
    users = [(u, 0, 0) for u in range(1, 11)]
    reconcile_into(warehouse_con, rows, users)
    events = catalog_events()
    # the event the ledger spends with becomes a reset: every past spend row replays differently
    spend_id = CATALOG_EVENT_IDS["ai_image_generated"]
    reset_name = "subscription_amount_paid"
    events = [
        e | {"name": f"renamed_{reset_name}"} if e["name"] == reset_name else e for e in events
    ]
    events = [e | {"name": reset_name} if e["id"] == spend_id else e for e in events]
    changed = reconcile_into(warehouse_con, rows, users, events=events)
    assert changed.result.replay_mode == rs.MODE_FULL
    assert "event catalog" in changed.result.replay_reason
    assert_same_report(changed, full_reconciliation(rows, users, events=events))

    earlier = reconcile_into(
        warehouse_con, rows, users, events=events, cutoff=CUTOFF - dt.timedelta(days=1)
    )
    assert earlier.result.replay_mode == rs.MODE_FULL and "earlier" in earlier.result.replay_reason


@pytest.mark.parametrize("batch_rows", [1, 7, 250])
def test_streaming_the_replay_in_small_batches_reports_what_one_batch_reports(batch_rows):
    rows = ledger_rows(random_ledger(14, n_rows=500, n_users=9))
    users = [(u, 0, 0) for u in range(1, 10)]
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, rows=rows, users=users)
    batched = read_reports(con, reconcile(con, CUTOFF, batch_rows=batch_rows))
    whole = full_reconciliation(rows, users)
    assert_same_report(batched, whole)
    summaries = whole.result.summaries
    assert summaries[rc.CHAIN_BREAK].count > 0 and summaries[rc.TIMESTAMP_ORDER].count > 0


def test_a_resumed_run_streamed_in_batches_equals_a_full_replay(warehouse_con):
    everything = ledger_rows(random_ledger(15, n_rows=800, n_users=12))
    users = [(u, 0, 0) for u in range(1, 13)]
    load_inputs(warehouse_con, rows=[r for r in everything if r["id"] <= 1500], users=users)
    first = reconcile(warehouse_con, CUTOFF, keep_state=True, batch_rows=13)
    write_reconciliation(warehouse_con, first)
    drop_working_tables(warehouse_con)
    load_inputs(warehouse_con, rows=everything, users=users)
    resumed = read_reports(
        warehouse_con, reconcile(warehouse_con, CUTOFF, keep_state=True, batch_rows=13)
    )
    assert resumed.result.replay_mode == rs.MODE_RESUMED
    assert_same_report(resumed, full_reconciliation(everything, users))
