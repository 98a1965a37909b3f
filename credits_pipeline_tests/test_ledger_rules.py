"""Every ledger rule of contract section 3, with the readings of section 5, on hand-built ledgers.

One test per rule firing, and one per legitimate case that must not fire; each ledger is a few
rows so that the expected anomalies can be read off the test.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.fixtures import BASE_TIME, catalog_events, load_inputs
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.reconcile import reconcile
from credits_pipeline.ledger.store import read_reports

CUTOFF = dt.datetime(2025, 6, 1, 0, 0, 0)
FACELESS_1 = {
    "facelesses": [{"id": 1, "user_id": 1, "video_id": 1}],
    "videos": [{"id": 1, "user_id": 1, "type": "faceless", "status": "rendering"}],
}


def run(rows, users=((1, 0, 0),), events=None, cutoff=CUTOFF, **content):
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, rows=rows, users=users, events=events, **content)
    return read_reports(con, reconcile(con, cutoff))


def found(result, rule):
    return [a for a in result.anomalies.to_pylist() if a["rule"] == rule]


def ids(result, rule):
    return [a["credit_history_id"] for a in found(result, rule)]


def trial(id=1, user=1, amount=10_000):
    return row(id, user, "subscribe_to_trial", amount, 0)


def at(seconds):
    return BASE_TIME + dt.timedelta(seconds=seconds)


# --- event_type_mismatch -----------------------------------------------------------------------


def test_a_row_written_with_the_other_event_type_is_an_event_type_mismatch():
    result = run([trial(), row(2, 1, "idea_discovered", 15, 10_000, event_type=1)])
    (a,) = found(result, rc.EVENT_TYPE_MISMATCH)
    assert (a["credit_history_id"], a["expected"], a["actual"]) == (2, "2", "1")
    assert (a["entity_type"], a["entity_id"]) == ("credit_history", 2)


def test_rows_of_unknown_events_are_not_checked_for_event_type_mismatch():
    result = run([trial(), row(2, 1, 999, 5, 10_000, event_type=1)])
    assert found(result, rc.EVENT_TYPE_MISMATCH) == []
    assert ids(result, rc.ORPHAN_EVENT) == [2]
    assert found(result, rc.PRICING_MISMATCH) == []


# --- pricing_mismatch --------------------------------------------------------------------------


def test_a_calculative_spend_is_priced_as_the_ceiling_of_value_times_half_the_index():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_generated", 15, 10_000, index=15),  # ceil(2 * 7.5) = 15
            row(3, 1, "faceless_video_generated", 14, 9_985, index=13),  # ceil(2 * 6.5) = 13
            row(4, 1, "content_prompt_requested", 7, 9_972, index=1400),  # ceil(0.01 * 700.0)
        ]
    )
    (a,) = found(result, rc.PRICING_MISMATCH)
    assert (a["credit_history_id"], a["expected"], a["actual"]) == (3, "13", "14")


def test_pricing_follows_ieee_doubles_so_an_inexact_product_rounds_up():
    # 0.01 * (1401 / 2.0) = 7.005000000000001 in doubles: the application charges 8
    result = run([trial(), row(2, 1, "content_prompt_requested", 8, 10_000, index=1401)])
    assert found(result, rc.PRICING_MISMATCH) == []
    result = run([trial(), row(2, 1, "content_prompt_requested", 7, 10_000, index=1401)])
    (a,) = found(result, rc.PRICING_MISMATCH)
    assert (a["expected"], a["actual"]) == ("8", "7")


def test_a_calculative_add_is_priced_as_the_ceiling_of_value_times_the_index():
    result = run(
        [
            row(1, 1, "admin_credit_added", 40, 0, index=40),
            row(2, 1, "admin_credit_added", 41, 40, index=40),
        ]
    )
    assert ids(result, rc.PRICING_MISMATCH) == [2]


def test_a_fixed_event_must_move_its_value_whatever_the_index_says():
    result = run(
        [
            trial(),
            row(2, 1, "idea_discovered", 15, 10_000, index=3),
            row(3, 1, "idea_discovered", 3, 9_985, index=3),
        ]
    )
    (a,) = found(result, rc.PRICING_MISMATCH)
    assert (a["credit_history_id"], a["expected"], a["actual"]) == (3, "15", "3")


def test_resets_and_purchases_move_their_index_whatever_their_value():
    result = run(
        [
            row(1, 1, "subscribe_to_trial", 300, 0, index=300),  # value 500 is ignored
            row(2, 1, "custom_credit_purchased", 250, 250, index=250),
            row(3, 1, "subscription_amount_paid", 900, 300, index=800),
        ]
    )
    assert ids(result, rc.PRICING_MISMATCH) == [3]


def test_a_spend_below_its_minimum_is_a_pricing_mismatch_once():
    result = run([trial(), row(2, 1, "faceless_video_generated", 4, 10_000, index=4)])
    (a,) = found(result, rc.PRICING_MISMATCH)
    assert (a["expected"], a["actual"]) == ("13", "4")


def test_a_refund_is_never_priced():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_generated", 20, 10_000, creditable=("faceless", 1)),
            row(3, 1, "refunded_credits", 20, 9_980, index=999, creditable=("faceless", 1)),
        ],
        **FACELESS_1,
    )
    assert found(result, rc.PRICING_MISMATCH) == []


def test_an_unknown_calculation_type_leaves_the_amount_unjudged_but_min_amount_applies():
    events = [
        *catalog_events(),
        {
            "id": 50,
            "name": "tiered_render",
            "type": 2,
            "calculation_type": "tiered",
            "value": 3.0,
            "min_amount": 10.0,
        },
    ]
    result = run(
        [trial(), row(2, 1, 50, 12, 10_000, index=1), row(3, 1, 50, 5, 9_988, index=1)],
        events=events,
    )
    (a,) = found(result, rc.PRICING_MISMATCH)
    assert (a["credit_history_id"], a["expected"], a["actual"]) == (3, "10", "5")


def test_an_event_outside_the_catalog_is_priced_by_the_general_rule_and_its_event_type():
    events = [
        *catalog_events(),
        {
            "id": 60,
            "name": "voice_minutes",
            "type": 2,
            "calculation_type": "calculative",
            "value": 3.0,
            "min_amount": None,
        },
    ]
    result = run(
        [
            trial(),
            row(2, 1, 60, 6, 10_000, index=4, event_type=2),  # spend: ceil(3 * 2.0) = 6
            row(3, 1, 60, 12, 9_994, index=4, event_type=1),  # add by event_type: ceil(3 * 4) = 12
            row(4, 1, 60, 7, 10_006, index=4, event_type=2),
        ],
        events=events,
    )
    assert ids(result, rc.PRICING_MISMATCH) == [4]
    assert ids(result, rc.EVENT_TYPE_MISMATCH) == [3]


# --- excess_refund -----------------------------------------------------------------------------


def test_a_refund_of_a_failed_generation_is_legitimate():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_generated", 20, 10_000, creditable=("faceless", 1)),
            row(3, 1, "refunded_credits", 20, 9_980, creditable=("faceless", 1)),
        ],
        users=[(1, 10_000, 0)],
        **FACELESS_1,
    )
    assert result.anomalies.num_rows == 0


def test_refunds_above_what_was_charged_for_the_creditable_are_excess_refunds():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_generated", 20, 10_000, creditable=("faceless", 1)),
            row(3, 1, "refunded_credits", 15, 9_980, creditable=("faceless", 1)),
            row(4, 1, "refunded_credits", 15, 9_995, creditable=("faceless", 1)),
        ],
        **FACELESS_1,
    )
    (a,) = found(result, rc.EXCESS_REFUND)
    assert (a["credit_history_id"], a["expected"], a["actual"], a["credits"]) == (4, "20", "30", 10)


def test_a_refund_before_the_charge_or_without_creditable_is_an_excess_refund():
    result = run(
        [
            trial(),
            row(2, 1, "refunded_credits", 20, 10_000, creditable=("faceless", 1)),
            row(3, 1, "faceless_video_generated", 20, 10_020, creditable=("faceless", 1)),
            row(4, 1, "refunded_credits", 5, 10_000),
            row(5, 1, "refunded_credits", 5, 10_005, creditable=("faceless", None)),
        ],
        **FACELESS_1,
    )
    assert ids(result, rc.EXCESS_REFUND) == [2, 4, 5]


def test_refunds_are_counted_per_user_and_creditable():
    result = run(
        [
            trial(1, 1),
            trial(2, 2),
            row(3, 1, "faceless_video_generated", 20, 10_000, creditable=("faceless", 1)),
            row(4, 2, "refunded_credits", 20, 10_000, creditable=("faceless", 1)),
        ],
        users=[(1, 0, 0), (2, 0, 0)],
        **FACELESS_1,
    )
    assert ids(result, rc.EXCESS_REFUND) == [4]


# --- double_charge -----------------------------------------------------------------------------


def test_a_second_charge_of_the_same_creditable_within_60_s_is_a_double_charge():
    result = run(
        [
            trial(),
            row(
                2,
                1,
                "faceless_video_generated",
                20,
                10_000,
                creditable=("faceless", 1),
                created_at=at(1000),
            ),
            row(
                3,
                1,
                "faceless_video_generated",
                20,
                9_980,
                creditable=("faceless", 1),
                created_at=at(1059),
            ),
            row(
                4,
                1,
                "faceless_video_generated",
                20,
                9_960,
                creditable=("faceless", 1),
                created_at=at(1119),
            ),  # exactly 60 s after row 3: not a double charge
        ],
        **FACELESS_1,
    )
    assert ids(result, rc.DOUBLE_CHARGE) == [3]


def test_a_triple_charge_is_two_double_charges():
    result = run(
        [
            trial(),
            *[
                row(
                    i,
                    1,
                    "faceless_video_generated",
                    20,
                    10_000 - 20 * (i - 2),
                    creditable=("faceless", 1),
                    created_at=at(1000 + i),
                )
                for i in (2, 3, 4)
            ],
        ],
        **FACELESS_1,
    )
    assert ids(result, rc.DOUBLE_CHARGE) == [3, 4]


def test_a_second_charge_within_60_s_after_a_refund_of_the_first_is_legitimate():
    result = run(
        [
            trial(),
            row(
                2,
                1,
                "faceless_video_generated",
                20,
                10_000,
                creditable=("faceless", 1),
                created_at=at(1000),
            ),
            row(
                3, 1, "refunded_credits", 20, 9_980, creditable=("faceless", 1), created_at=at(1010)
            ),
            row(
                4,
                1,
                "faceless_video_generated",
                20,
                10_000,
                creditable=("faceless", 1),
                created_at=at(1020),
            ),
        ],
        users=[(1, 9_980, 0)],
        **FACELESS_1,
    )
    assert result.anomalies.num_rows == 0


def test_double_charges_need_the_same_event_a_creditable_and_non_null_timestamps():
    result = run(
        [
            trial(),
            row(
                2,
                1,
                "faceless_video_generated",
                20,
                10_000,
                creditable=("faceless", 1),
                created_at=at(1000),
            ),
            row(
                3,
                1,
                "faceless_video_exported",
                3,
                9_980,
                creditable=("faceless", 1),
                created_at=at(1001),
            ),
            row(4, 1, "idea_discovered", 15, 9_977, created_at=at(1002)),
            row(5, 1, "idea_discovered", 15, 9_962, created_at=at(1003)),
            row(
                6,
                1,
                "faceless_video_exported",
                3,
                9_947,
                creditable=("faceless", 1),
                created_at=None,
            ),
        ],
        **FACELESS_1,
    )
    assert found(result, rc.DOUBLE_CHARGE) == []


def test_a_repeat_written_earlier_in_time_than_the_first_charge_is_no_double_charge():
    result = run(
        [
            trial(),
            row(
                2,
                1,
                "faceless_video_generated",
                20,
                10_000,
                creditable=("faceless", 1),
                created_at=at(1000),
            ),
            row(
                3,
                1,
                "faceless_video_generated",
                20,
                9_980,
                creditable=("faceless", 1),
                created_at=at(990),
            ),
        ],
        **FACELESS_1,
    )
    assert found(result, rc.DOUBLE_CHARGE) == []


# --- uncharged_content -------------------------------------------------------------------------


def test_completed_content_without_its_charge_is_uncharged_content():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_generated", 20, 10_000, creditable=("faceless", 1)),
            # the video of faceless 2 is charged by the wrong alias: does not count
            row(3, 1, "faceless_video_generated", 20, 9_980, creditable=("video", 2)),
            row(4, 1, "real_clone_and_text_to_speech", 60, 9_960, creditable=("real-clone", 1)),
            row(5, 1, "text_to_speech_generated", 8, 9_900, creditable=("speech", 1)),
        ],
        facelesses=[{"id": 1, "user_id": 1, "video_id": 1}, {"id": 2, "user_id": 1, "video_id": 2}],
        videos=[
            {"id": 1, "user_id": 1, "type": "faceless", "status": "completed"},
            {"id": 2, "user_id": 1, "type": "faceless", "status": "completed"},
            {"id": 3, "user_id": 4, "type": "custom", "status": "completed"},
            {"id": 4, "user_id": 1, "type": "custom", "status": "Completed"},
        ],
        real_clones=[{"id": 1, "user_id": 1, "status": "completed"}],
        speeches=[
            {"id": 1, "user_id": 1, "status": "completed"},
            {"id": 2, "user_id": None, "status": "completed"},
        ],
    )
    got = [
        (a["entity_type"], a["entity_id"], a["user_id"], a["credit_history_id"])
        for a in found(result, rc.UNCHARGED_CONTENT)
    ]
    assert got == [
        ("speech", 2, None, None),
        ("faceless", 2, 1, None),
        ("real-clone", 1, 1, None),
        ("video", 3, 4, None),
    ]


# --- orphans -----------------------------------------------------------------------------------


def test_a_row_of_a_missing_user_is_an_orphan_user_and_every_row_rule_still_applies():
    result = run([row(1, 5, "idea_discovered", 14, 0)])
    assert ids(result, rc.ORPHAN_USER) == [1]
    assert ids(result, rc.PRICING_MISMATCH) == [1]
    assert ids(result, rc.OVERDRAFT_WRITEOFF) == [1]


def test_a_row_of_a_missing_event_is_an_orphan_event_and_is_replayed_by_event_type():
    result = run([trial(), row(2, 1, 77, 5, 10_000, event_type=2)], users=[(1, 9_995, 0)])
    assert ids(result, rc.ORPHAN_EVENT) == [2]
    assert found(result, rc.BALANCE_DRIFT) == []


def test_unknown_aliases_missing_rows_and_other_users_content_are_orphan_creditables():
    result = run(
        [
            trial(),
            row(2, 1, "faceless_video_exported", 3, 10_000, creditable=("faceless", 1)),
            row(3, 1, "faceless_video_exported", 3, 9_997, creditable=("faceless", 2)),
            row(4, 1, "real_clone_generated", 50, 9_994, creditable=("real_clone", 1)),
            row(5, 1, "ai_image_generated", 1, 9_944, creditable=("", 1)),
            row(6, 1, "video_generated", 6, 9_943, creditable=("video", 9)),
            row(7, 1, "video_generated", 6, 9_937, creditable=("video", None)),
            row(8, 1, "ai_image_generated", 1, 9_931, creditable=("media", 12345)),
            row(9, 1, "custom_character_purchased", 50, 9_930, creditable=("character", None)),
            row(10, 1, "text_to_speech_generated", 8, 9_880, creditable=("speech", 1)),
        ],
        facelesses=[{"id": 1, "user_id": 1, "video_id": 1}, {"id": 2, "user_id": 2, "video_id": 2}],
        videos=[
            {"id": 1, "user_id": 1, "type": "faceless", "status": "draft"},
            {"id": 2, "user_id": 2, "type": "faceless", "status": "draft"},
        ],
        speeches=[{"id": 1, "user_id": None, "status": "processing"}],
    )
    got = {
        a["credit_history_id"]: (a["expected"], a["actual"])
        for a in found(result, rc.ORPHAN_CREDITABLE)
    }
    assert got == {
        3: ("1", "2"),
        4: (None, "real_clone"),
        5: (None, ""),
        6: (None, "9"),
        7: (None, None),
    }


# --- duplicate_monthly_release -----------------------------------------------------------------


def test_every_monthly_release_after_the_first_in_a_utc_month_is_a_duplicate():
    result = run(
        [
            row(1, 1, "monthly_credits_added", 100, 0, created_at=dt.datetime(2025, 3, 1, 0, 0)),
            row(
                2, 1, "monthly_credits_added", 100, 100, created_at=dt.datetime(2025, 3, 31, 23, 59)
            ),
            row(3, 1, "monthly_credits_added", 100, 200, created_at=dt.datetime(2025, 4, 1, 0, 0)),
            row(4, 1, "monthly_credits_added", 100, 300, created_at=dt.datetime(2025, 3, 15)),
            row(5, 1, "monthly_credits_added", 100, 400, created_at=None),
        ],
        users=[(1, 500, 0)],
    )
    got = [
        (a["credit_history_id"], a["expected"], a["actual"])
        for a in found(result, rc.DUPLICATE_MONTHLY_RELEASE)
    ]
    assert got == [(2, "1", "2"), (4, "1", "3")]


# --- timestamp_order ---------------------------------------------------------------------------


def test_timestamp_order_reports_each_broken_row_once_with_iso_texts():
    result = run(
        [
            trial(1, 1),
            row(2, 1, "idea_discovered", 15, 10_000, created_at=None),
            row(
                3,
                1,
                "idea_discovered",
                15,
                9_985,
                created_at=dt.datetime(2025, 3, 2),
                updated_at=dt.datetime(2025, 3, 1, 23),
            ),
            # before row 3: previous row by id; row 2's NULL does not hide row 3 from row 4
            row(
                4,
                1,
                "idea_discovered",
                15,
                9_970,
                created_at=dt.datetime(2025, 3, 1, 6),
                updated_at=dt.datetime(2025, 3, 1, 5),
            ),
            row(
                5,
                1,
                "idea_discovered",
                15,
                9_955,
                created_at=dt.datetime(2025, 6, 1, 0, 0, 0, 900_000),
            ),  # same second as cut-off
            row(6, 1, "idea_discovered", 15, 9_940, created_at=dt.datetime(2025, 6, 1, 0, 0, 1)),
        ],
    )
    got = {
        a["credit_history_id"]: (a["expected"], a["actual"])
        for a in found(result, rc.TIMESTAMP_ORDER)
    }
    assert got == {
        2: (None, None),
        3: ("2025-03-02T00:00:00Z", "2025-03-01T23:00:00Z"),
        4: ("2025-03-02T00:00:00Z", "2025-03-01T06:00:00Z"),
        6: ("2025-06-01T00:00:00Z", "2025-06-01T00:00:01Z"),
    }


def test_a_null_created_at_skips_the_comparison_with_the_next_row():
    result = run(
        [
            trial(1, 1),
            row(2, 1, "idea_discovered", 15, 10_000, created_at=None),
            row(3, 1, "idea_discovered", 15, 9_985, created_at=BASE_TIME - dt.timedelta(days=1)),
        ]
    )
    assert ids(result, rc.TIMESTAMP_ORDER) == [2]


# --- the anomaly relation ----------------------------------------------------------------------


def test_every_anomaly_carries_the_cutoff_as_detected_at_and_rows_are_ordered_by_rule():
    result = run(
        [
            trial(),
            row(2, 9, "idea_discovered", 14, 0, event_type=1, created_at=None),
        ],
        users=[(1, 1, 0)],
    )
    rows = result.anomalies.to_pylist()
    assert {r["detected_at"] for r in rows} == {CUTOFF}
    order = [rc.RULE_CODES.index(r["rule"]) for r in rows]
    assert order == sorted(order)
    assert [r["rule"] for r in rows] == [
        rc.BALANCE_DRIFT,
        rc.OVERDRAFT_WRITEOFF,
        rc.EVENT_TYPE_MISMATCH,
        rc.PRICING_MISMATCH,
        rc.ORPHAN_USER,
        rc.TIMESTAMP_ORDER,
    ]
    assert result.anomalies.column_names[:9] == [
        "rule",
        "user_id",
        "credit_history_id",
        "entity_type",
        "entity_id",
        "expected",
        "actual",
        "detail",
        "credits",
    ]
    assert all(isinstance(r["detail"], str) and r["detail"] for r in rows)


def test_summaries_count_violations_and_credits_and_list_the_worst():
    result = run(
        [
            trial(),
            row(2, 1, "idea_discovered", 15, 9_000),
            row(3, 1, "idea_discovered", 15, 8_000),
        ],
        users=[(1, 7_985, 0)],
    )
    s = result.result.summaries[rc.CHAIN_BREAK]
    assert (s.count, s.credits) == (2, 1985)
    assert [(w["credit_history_id"], w["credits"]) for w in s.worst] == [(2, 1000), (3, 985)]
    assert result.result.summaries[rc.DOUBLE_CHARGE].count == 0
    assert set(result.result.summaries) == set(rc.RULE_CODES)
    assert result.result.status_counts == {"ok": 0, "drift": 0, "broken_chain": 1}


def test_each_of_the_13_rules_is_one_named_statement_in_the_rules_module():
    from credits_pipeline.ledger import rules

    statements = [*rules.REPLAY_RULE_SQL, *rules.ROW_RULE_SQL]
    assert sorted(statements) == sorted(rc.RULE_CODES) and len(statements) == 13
    for code, statement in {**rules.REPLAY_RULE_SQL, **rules.ROW_RULE_SQL}.items():
        assert f"'{code}' as rule" in statement, code
