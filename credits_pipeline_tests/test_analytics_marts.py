"""Per-item costs and point-in-time plan attribution, on a hand-built ledger, through Dagster.

One user holds Basic from January and upgrades to Pro on February 10 (the old subscription ends,
a new one starts); a faceless video is charged for its render and its AI images, a real clone is
charged and refunded because it failed, a custom video is charged for its render and its
captions. Every expected value below is worked out by hand from these rows, not with the models'
logic. The warehouse is written and the dbt assets materialized with the helpers of
test_dbt_models.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from credits_pipeline.source.tables import TABLES
from credits_pipeline.warehouse.raw_tables import ensure_raw_tables
from credits_pipeline_tests.dbt_duckdb import prepare_manifest
from credits_pipeline_tests.test_dbt_models import RAW_TYPES, approx, materialize_dbt_assets, query

T = dt.datetime
D = dt.date
CUTOFF = T(2025, 3, 15, 3, 0)  # three weeks after the newest row: a stale source
UPGRADED_AT = T(2025, 2, 10, 12, 0)
BASIC_PRICE_PER_CREDIT = 29.0 / 500
PRO_PRICE_PER_CREDIT = 79.0 / 1500

EVENTS = {
    "subscription_amount_paid": (10, 1, "calculative", 20.0, None),
    "prorated_credits": (11, 1, "fixed", 0.0, None),
    "refunded_credits": (12, 1, "fixed", 0.0, None),
    "faceless_video_generated": (13, 2, "calculative", 2.0, 13.0),
    "bulk_ai_images_generated": (14, 2, "calculative", 2.0, 3.0),
    "real_clone_generated": (15, 2, "calculative", 2.0, 50.0),
    "video_generated": (16, 2, "calculative", 2.0, 6.0),
    "audio_transcription": (17, 2, "calculative", 2.0, 1.0),
    "text_to_speech_generated": (18, 2, "calculative", 2.0, 7.0),
}
PLANS = [
    dict(
        id=1,
        parent_id=None,
        plan_id="prod_basic",
        name="Basic",
        type="product",
        price=0.0,
        slug="basic",
        active=True,
    ),
    dict(
        id=2,
        parent_id=1,
        plan_id="price_basic_month",
        name="Basic",
        type="month",
        price=2900.0,
        currency="usd",
        slug="basic-month",
        active=True,
        meta='{"full_credits": 500}',
    ),
    dict(
        id=3,
        parent_id=None,
        plan_id="prod_pro",
        name="Pro",
        type="product",
        price=0.0,
        slug="pro",
        active=True,
    ),
    dict(
        id=4,
        parent_id=3,
        plan_id="price_pro_month",
        name="Pro",
        type="month",
        price=7900.0,
        currency="usd",
        slug="pro-month",
        active=True,
        meta='{"full_credits": 1500}',
    ),
]
SUBSCRIPTIONS = [
    dict(
        id=1,
        user_id=1,
        type="default",
        stripe_id="sub_1",
        stripe_status="canceled",
        stripe_price="price_basic_month",
        quantity=1,
        created_at=T(2025, 1, 5, 10),
        ends_at=UPGRADED_AT,
    ),
    dict(
        id=2,
        user_id=1,
        type="default",
        stripe_id="sub_2",
        stripe_status="active",
        stripe_price="price_pro_month",
        quantity=1,
        created_at=UPGRADED_AT,
    ),
]
USERS = [
    dict(
        id=1,
        plan_id=4,
        subscription_provider=1,
        remaining_credit_amount=988,
        monthly_credit_amount=1500,
        extra_credits=0,
        created_at=T(2025, 1, 5, 9),
    )
]
# id, event, creditable_type, creditable_id, amount, previous_amount, created_at
LEDGER = [
    (101, "subscription_amount_paid", None, None, 500, 0, T(2025, 1, 5, 10)),
    (102, "faceless_video_generated", "faceless", 1001, 60, 500, T(2025, 1, 10, 9)),
    (103, "bulk_ai_images_generated", "faceless", 1001, 6, 440, T(2025, 1, 10, 9)),
    (104, "real_clone_generated", "real-clone", 2001, 100, 434, T(2025, 1, 20, 9)),
    (105, "refunded_credits", "real-clone", 2001, 100, 334, T(2025, 1, 20, 9, 20)),
    (106, "subscription_amount_paid", None, None, 500, 434, T(2025, 2, 5, 10)),
    (107, "prorated_credits", None, None, 1200, 500, UPGRADED_AT),
    (108, "faceless_video_generated", "faceless", 1002, 40, 1200, T(2025, 2, 15, 9)),
    (109, "real_clone_generated", "real-clone", 2002, 120, 1160, T(2025, 2, 15, 10)),
    (110, "video_generated", "video", 3001, 30, 1040, T(2025, 2, 20, 9)),
    (111, "audio_transcription", "video", 3001, 2, 1010, T(2025, 2, 20, 9, 30)),
    (112, "text_to_speech_generated", "speech", 4001, 20, 1008, T(2025, 2, 22, 9)),
]
VIDEOS = [
    dict(
        id=5001,
        user_id=1,
        title="f1",
        type="faceless",
        status="completed",
        exports=0,
        retries=0,
        created_at=T(2025, 1, 10, 9),
    ),
    dict(
        id=5002,
        user_id=1,
        title="f2",
        type="faceless",
        status="completed",
        exports=0,
        retries=0,
        created_at=T(2025, 2, 15, 9),
    ),
    dict(
        id=3001,
        user_id=1,
        title="c1",
        type="custom",
        status="completed",
        exports=0,
        retries=0,
        created_at=T(2025, 2, 20, 9),
    ),
]
FACELESSES = [
    dict(id=1001, user_id=1, type="ai_visuals", video_id=5001, created_at=T(2025, 1, 10, 9)),
    dict(id=1002, user_id=1, type="ai_visuals", video_id=5002, created_at=T(2025, 2, 15, 9)),
]
REAL_CLONES = [
    dict(id=2001, user_id=1, status="failed", retries=0, created_at=T(2025, 1, 20, 9)),
    dict(id=2002, user_id=1, status="completed", retries=0, created_at=T(2025, 2, 15, 10)),
]
SPEECHES = [dict(id=4001, user_id=1, status="completed", created_at=T(2025, 2, 22, 9))]


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    for row in rows:
        names = ", ".join(row)
        con.execute(
            f"insert into raw.{table} ({names}) values ({', '.join('?' * len(row))})",
            list(row.values()),
        )


def write_warehouse(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("set timezone = 'UTC'")
        for schema in ("raw", "credits", "marts"):
            con.execute(f"create schema {schema}")
        for table in TABLES:
            columns = ", ".join(f"{c.name} {RAW_TYPES[c.kind]}" for c in table.extracted_columns)
            if table.name == "credit_histories":
                for name in ("credit_histories", "credit_histories__open"):
                    con.execute(f"create table raw.{name} ({columns}, _partition DATE)")
            else:
                con.execute(f"create table raw.{table.name} ({columns})")
        con.execute(
            "create table raw.extraction_cutoff "
            "(cutoff_at TIMESTAMP, ledger_closed_before TIMESTAMP, ledger_closed_max_id BIGINT)"
        )
        con.execute(
            "insert into raw.extraction_cutoff values (?, ?, ?)",
            [CUTOFF, CUTOFF.replace(hour=0), LEDGER[-1][0]],
        )
        for table in TABLES:  # the quarantines and bookkeeping the extraction adds (all empty)
            ensure_raw_tables(con, table)
        _insert(
            con,
            "credit_events",
            [
                dict(
                    id=i,
                    name=name,
                    type=kind,
                    calculation_type=calc,
                    value=value,
                    min_amount=least,
                    created_at=T(2024, 12, 1),
                )
                for name, (i, kind, calc, value, least) in EVENTS.items()
            ],
        )
        _insert(con, "plans", PLANS)
        _insert(con, "subscriptions", SUBSCRIPTIONS)
        _insert(con, "users", USERS)
        _insert(con, "videos", VIDEOS)
        _insert(con, "facelesses", FACELESSES)
        _insert(con, "real_clones", REAL_CLONES)
        _insert(con, "speeches", SPEECHES)
        _insert(
            con,
            "credit_histories",
            [
                dict(
                    id=i,
                    user_id=1,
                    credit_events_id=EVENTS[event][0],
                    creditable_type=ctype,
                    creditable_id=cid,
                    calculative_index=1,
                    event_value=0,
                    amount=amount,
                    previous_amount=previous,
                    event_type=EVENTS[event][1],
                    meta="[]",
                    created_at=created,
                    updated_at=created,
                    _partition=created.date(),
                )
                for i, event, ctype, cid, amount, previous, created in LEDGER
            ],
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prepare_manifest()
    tmp = tmp_path_factory.mktemp("analytics_marts")
    path = tmp / "warehouse.duckdb"
    write_warehouse(path)
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = materialize_dbt_assets(path, tmp / "dagster_home", monkeypatch)
    assert result.success
    return path


def test_usage_before_an_upgrade_counts_under_the_plan_held_at_the_time(warehouse):
    rows = query(
        warehouse,
        "select plan_tier, activity_month, users, credits_allocated, credits_consumed,"
        " credits_forfeited from marts.plan_utilization order by activity_month, plan_tier",
    )
    assert [tuple(r.values()) for r in rows] == [
        # January under Basic although the user is on Pro today: 60 + 6 + 100 consumed
        ("Basic", D(2025, 1, 1), 1, 500, 166, 0),
        # the February 5 renewal is still Basic (it forfeits the 434 left)
        ("Basic", D(2025, 2, 1), 1, 500, 0, 434),
        # from the upgrade on: the prorated reset (forfeiting the 500) and 40+120+30+2+20
        ("Pro", D(2025, 2, 1), 1, 1200, 212, 500),
    ]


def test_each_ledger_row_takes_the_plan_of_the_subscription_it_was_written_under(warehouse):
    rows = query(
        warehouse,
        "select credit_history_id, plan_tier, price_per_credit"
        " from credits.int_ledger_row_plans order by credit_history_id",
    )
    expected = {i: ("Basic" if i <= 106 else "Pro") for i, *_ in LEDGER}
    assert {r["credit_history_id"]: r["plan_tier"] for r in rows} == expected
    assert {r["plan_tier"]: r["price_per_credit"] for r in rows} == {
        "Basic": approx(BASIC_PRICE_PER_CREDIT),
        "Pro": approx(PRO_PRICE_PER_CREDIT),
    }


def test_a_completed_item_costs_every_charge_on_it_and_a_failed_one_is_not_counted(warehouse):
    rows = query(
        warehouse,
        "select service, usage_month, charges, credits_spent, content_type, completed_items,"
        " credits_per_completed_item_mean, charges_per_completed_item,"
        " list_value_per_completed_item from marts.service_efficiency"
        " order by service, usage_month",
    )
    assert [tuple(r.values()) for r in rows] == [
        # captions make no content item of their own: the custom video's captions count there
        ("captions", D(2025, 2, 1), 1, 2, None, 0, None, None, None),
        # the faceless video is its render (60) and its AI images (6): one item of 66 credits
        (
            "faceless_video",
            D(2025, 1, 1),
            2,
            66,
            "faceless_video",
            1,
            approx(66),
            approx(2),
            approx(66 * BASIC_PRICE_PER_CREDIT),
        ),
        (
            "faceless_video",
            D(2025, 2, 1),
            1,
            40,
            "faceless_video",
            1,
            approx(40),
            approx(1),
            approx(40 * PRO_PRICE_PER_CREDIT),
        ),
        # the January clone failed and was refunded: a charge, but no completed item
        ("real_clone", D(2025, 1, 1), 1, 100, "real_clone", 0, None, None, None),
        (
            "real_clone",
            D(2025, 2, 1),
            1,
            120,
            "real_clone",
            1,
            approx(120),
            approx(1),
            approx(120 * PRO_PRICE_PER_CREDIT),
        ),
        # the custom video: render 30 + captions 2
        (
            "video_render",
            D(2025, 2, 1),
            1,
            30,
            "custom_video",
            1,
            approx(32),
            approx(2),
            approx(32 * PRO_PRICE_PER_CREDIT),
        ),
        (
            "voice_synthesis",
            D(2025, 2, 1),
            1,
            20,
            "speech",
            1,
            approx(20),
            approx(1),
            approx(20 * PRO_PRICE_PER_CREDIT),
        ),
    ]


def test_service_efficiency_names_its_per_charge_figures_per_charge(warehouse):
    rows = query(
        warehouse,
        "select credits_per_charge_mean, list_price_per_credit"
        " from marts.service_efficiency where service = 'faceless_video'"
        " order by usage_month",
    )
    assert [tuple(r.values()) for r in rows] == [
        (approx(33), approx(BASIC_PRICE_PER_CREDIT)),
        (approx(40), approx(PRO_PRICE_PER_CREDIT)),
    ]


def test_trends_state_a_fresh_source_and_call_users_inactive_only_on_one(warehouse):
    rows = query(
        warehouse,
        "select source_fresh_as_of, source_is_stale, churn_risk_reason"
        " from marts.user_credit_trends",
    )
    # the newest row (02-22) is three weeks before the cut-off: read as fresh, the user would be
    # `inactive` (21 days without a row); the source is stale, so nobody is
    assert [tuple(r.values()) for r in rows] == [(T(2025, 2, 22, 9), True, None)]
