"""The reconciliation assets run through Dagster against a small DuckDB warehouse.

Builds the warehouse relations the assets read (`credits.*` as tables shaped like the dbt views,
`raw.*` as the extraction writes them), materializes the multi-asset with `dg.materialize`, and
checks both stored relations, the metadata and the 13 check results — including that failed
checks never fail the run unless blocking is asked for.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from credits_pipeline import check_metadata as cm
from credits_pipeline.alerts import channels as ch
from credits_pipeline.ledger import (
    ANOMALIES_KEY,
    CHECK_NAMES,
    RECONCILIATION_KEY,
    ROW_POOLS_KEY,
    build_reconciliation_assets,
    reconciliation_assets,
    reconciliation_gates,
    report,
)
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.assets import (
    ANOMALIES_DESCRIPTION,
    GATE_NAME,
    NON_OK_METADATA_KEY,
    NON_OK_TOTAL_METADATA_KEY,
    WEEKLY_CHART_METADATA_KEY,
)
from credits_pipeline.ledger.reconcile import ANOMALY_OUTPUT_COLUMNS
from credits_pipeline.names import WAREHOUSE_KIND
from credits_pipeline.runbook import RUNBOOK_PATH
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse

REPO_ROOT = Path(__file__).resolve().parents[1]

CUTOFF = dt.datetime(2025, 6, 1)


def build_warehouse(path):
    con = duckdb.connect(str(path))
    for schema in ("raw", "credits", "marts"):
        con.execute(f"create schema {schema}")
    con.execute("""
        create table credits.credit_events as select * from (values
            (1, 'subscribe_to_trial', 1, 'fixed', 500.0, null::double, 'reset'),
            (2, 'idea_discovered', 2, 'fixed', 15.0, 15.0, 'spend'),
            (3, 'custom_credit_purchased', 1, 'fixed', 0.0, null::double, 'purchase'),
            (4, 'faceless_video_generated', 2, 'calculative', 2.0, 13.0, 'spend')
        ) as t(credit_event_id, name, event_type, calculation_type, value, min_amount, effect)
    """)
    con.execute("""
        create table credits.credit_histories as select * from (values
            (1, 1, 1, null, null, 500, 500, 0.0, 1, timestamp '2025-03-01 10:00:00'),
            (2, 1, 2, null, null, 15, 15, 500.0, 2, timestamp '2025-03-01 10:05:00'),
            (3, 1, 3, null, null, 100, 100, 100.0, 1, timestamp '2025-03-01 10:06:00'),
            (4, 2, 1, null, null, 500, 500, 0.0, 1, timestamp '2025-03-02 10:00:00'),
            (5, 2, 2, null, null, 15, 15, 400.0, 2, timestamp '2025-03-02 10:05:00'),
            (6, 2, 4, 'faceless', 1, 20, 20, 385.0, 2, timestamp '2025-03-02 10:06:00'),
            (7, 9, 2, null, null, 15, 15, 0.0, 2, timestamp '2025-07-01 00:00:00')
        ) as t(credit_history_id, user_id, credit_event_id, creditable_type, creditable_id,
               calculative_index, unsigned_amount, previous_amount, event_type, created_at)
    """)
    con.execute("alter table credits.credit_histories add column updated_at timestamp")
    con.execute("update credits.credit_histories set updated_at = created_at")
    con.execute("""
        create table raw.users as select * from (values
            (1, 485::bigint, 100::bigint), (2, 365, 0), (3, null, 0)
        ) as t(id, remaining_credit_amount, extra_credits)
    """)
    con.execute(
        "create table raw.facelesses as select 1::bigint as id, 2::bigint as user_id, "
        "1::bigint as video_id"
    )
    con.execute(
        "create table raw.videos as select 1::bigint as id, 2::bigint as user_id, "
        "'faceless' as type, 'completed' as status"
    )
    con.execute("create table raw.real_clones (id bigint, user_id bigint, status varchar)")
    con.execute("create table raw.speeches (id bigint, user_id bigint, status varchar)")
    con.execute("create table raw.users__rejected (id varchar, _column varchar, _reason varchar)")
    con.execute(
        "create table raw.extraction_cutoff as select timestamp '2025-06-01 00:00:00' "
        "as cutoff_at, timestamp '2025-06-01' as ledger_closed_before, "
        "7::bigint as ledger_closed_max_id"
    )
    con.close()


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    path = tmp_path / "warehouse.duckdb"
    build_warehouse(path)
    return DuckDBWarehouse(path=str(path))


def materialize(assets, warehouse, tmp_path):
    home = tmp_path / "instance"
    home.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        return dg.materialize(
            assets, resources={"warehouse": warehouse}, instance=instance, raise_on_error=False
        )


def test_the_reconciliation_assets_write_both_relations_and_report_all_13_checks(
    warehouse, tmp_path
):
    result = materialize(reconciliation_assets, warehouse, tmp_path)
    assert result.success

    with duckdb.connect(warehouse.path, read_only=True) as con:
        recon = con.execute(
            "select user_id, ledger_subscription_balance, ledger_purchased_balance, drift, "
            "chain_breaks, first_break_history_id, status "
            "from marts.user_balance_reconciliation order by user_id"
        ).fetchall()
        anomalies = con.execute(
            "select rule, user_id, credit_history_id, entity_type, entity_id, expected, actual, "
            "detected_at from marts.ledger_anomalies"
        ).fetchall()
        temp_left = con.execute(
            "select count(*) from duckdb_tables() where table_name like '_recon%'"
        ).fetchone()[0]
    assert recon == [
        (1, 485, 100, 0, 0, None, "ok"),
        (2, 365, 0, 0, 1, 5, "broken_chain"),
        (3, 0, 0, 0, 0, None, "ok"),
    ]
    assert temp_left == 0
    assert [(a[0], a[1], a[2], a[5], a[6]) for a in anomalies] == [
        ("chain_break", 2, 5, "500", "400"),
        ("overdraft_writeoff", 9, 7, "0", "15"),
        ("orphan_user", 9, 7, None, "9"),
        ("timestamp_order", 9, 7, "2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z"),
    ]
    assert {a[7] for a in anomalies} == {CUTOFF}

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(CHECK_NAMES.values())
    failed = {name for name, e in evaluations.items() if not e.passed}
    assert failed == {
        CHECK_NAMES[rc.CHAIN_BREAK],
        CHECK_NAMES[rc.OVERDRAFT_WRITEOFF],
        CHECK_NAMES[rc.ORPHAN_USER],
        CHECK_NAMES[rc.TIMESTAMP_ORDER],
    }
    chain = evaluations[CHECK_NAMES[rc.CHAIN_BREAK]]
    assert chain.asset_key == RECONCILIATION_KEY
    assert chain.severity == dg.AssetCheckSeverity.ERROR
    assert chain.metadata[cm.VIOLATIONS].value == 1
    assert chain.metadata[cm.CREDITS_AT_STAKE].value == 100
    assert "| 2 | 5 | credit_history | 5 | 500 | 400 |" in chain.metadata[cm.WORST_USERS].value
    assert chain.metadata[cm.RUNBOOK].value == f"{RUNBOOK_PATH}#{rc.CHAIN_BREAK}"
    assert f"{RUNBOOK_PATH}#{rc.CHAIN_BREAK}" in chain.description
    orphan = evaluations[CHECK_NAMES[rc.ORPHAN_USER]]
    assert orphan.asset_key == ANOMALIES_KEY
    assert orphan.severity == dg.AssetCheckSeverity.WARN

    mats = {m.asset_key: m for m in result.get_asset_materialization_events()}
    assert set(mats) == {RECONCILIATION_KEY, ANOMALIES_KEY, ROW_POOLS_KEY}
    # the replay's pools around every row, which the marts read: one row per ledger row
    pools = mats[ROW_POOLS_KEY].materialization.metadata
    assert pools["dagster/row_count"].value == pools["replayed_rows"].value > 0
    assert {c.name for c in pools["dagster/column_schema"].value.columns} >= {
        "credit_history_id",
        "subscription_after",
        "purchased_after",
    }
    assert all(c.description for c in pools["dagster/column_schema"].value.columns)
    meta = mats[ANOMALIES_KEY].materialization.metadata
    assert meta["dagster/row_count"].value == 4
    assert meta["users_broken_chain"].value == 1
    assert meta["violations/chain_break"].value == 1
    assert "Rules: 4 failing" in meta["summary"].value
    failing_rules = meta["failing_rules"].value.splitlines()
    assert failing_rules[2].startswith("| `chain_break` | ERROR | 1 | 100 |")  # most credits first
    assert len(failing_rules) == 2 + 4


def test_rerunning_on_unchanged_data_gives_identical_rows(warehouse, tmp_path):
    def snapshot():
        with duckdb.connect(warehouse.path, read_only=True) as con:
            return (
                con.execute("select * from marts.ledger_anomalies").fetchall(),
                con.execute("select * from marts.user_balance_reconciliation").fetchall(),
            )

    def replay_metadata(result):
        mats = {m.asset_key: m for m in result.get_asset_materialization_events()}
        meta = mats[RECONCILIATION_KEY].materialization.metadata
        return meta["replay_mode"].value, meta["replayed_rows"].value, meta["ledger_rows"].value

    first_run = materialize(reconciliation_assets, warehouse, tmp_path)
    first = snapshot()
    again = materialize(reconciliation_assets, warehouse, tmp_path / "again")
    assert snapshot() == first
    # the second run resumed from the state the first stored, and had nothing new to replay
    mode, replayed, total = replay_metadata(first_run)
    assert (mode, replayed) == ("full", total) and total > 0
    assert replay_metadata(again) == ("resumed", 0, total)


def test_checks_are_non_blocking_by_default_and_blocking_only_for_money_rules_on_request():
    default = {
        k.name: s
        for k, s in zip(
            reconciliation_assets[0].check_keys, reconciliation_assets[0].check_specs, strict=False
        )
    }
    assert all(not spec.blocking for spec in reconciliation_assets[0].check_specs)
    assert len(default) == 13
    # asked for, the money checks move to a gate of their own, blocking; the rest stay, never so
    blocking = build_reconciliation_assets(blocking=True)
    assert not [spec for spec in blocking.check_specs if spec.blocking]
    (gate,) = reconciliation_gates(blocking=True)
    blocked = {spec.name for spec in gate.check_specs if spec.blocking}
    assert blocked == {CHECK_NAMES[c] for c in rc.MONEY_RULES}
    assert {spec.name for spec in [*gate.check_specs, *blocking.check_specs]} == set(default)
    assert reconciliation_gates(blocking=False) == []
    assert {
        rc.CHAIN_BREAK,
        rc.BALANCE_DRIFT,
        rc.OVERDRAFT_WRITEOFF,
        rc.EXCESS_REFUND,
        rc.DOUBLE_CHARGE,
        rc.PRICING_MISMATCH,
    } == rc.MONEY_RULES


def test_the_blocking_gate_reports_the_money_checks_exactly_as_the_reconciliation_would(
    warehouse, tmp_path
):
    """With blocking on, the money checks are evaluated by their own step from the stored
    anomalies: the same numbers as the reconciliation's own evaluation, and a failed one fails
    only that step (what reads the reports waits; the replay's pools are already published)."""
    plain = materialize(reconciliation_assets, warehouse, tmp_path / "plain")
    (gate,) = reconciliation_gates(blocking=True)
    gated = materialize(
        [build_reconciliation_assets(blocking=True), gate], warehouse, tmp_path / "gated"
    )

    def evaluations(result):
        return {
            e.check_name: (e.passed, e.severity, e.blocking, dict(e.metadata))
            for e in result.get_asset_check_evaluations()
        }

    before, after = evaluations(plain), evaluations(gated)
    assert set(after) == set(before) == set(CHECK_NAMES.values())
    for code in rc.RULES_BY_CODE:
        name = CHECK_NAMES[code]
        passed, severity, blocking, metadata = after[name]
        was_passed, was_severity, _, was_metadata = before[name]
        assert (passed, severity, metadata) == (was_passed, was_severity, was_metadata), name
        assert blocking == (code in rc.MONEY_RULES)
    # the money check that fails (chain_break) fails the gate's step alone
    failed_steps = {e.step_key for e in gated.all_events if e.is_step_failure}
    assert failed_steps == {GATE_NAME}
    materialized = {m.asset_key for m in gated.get_asset_materialization_events()}
    assert materialized == {RECONCILIATION_KEY, ANOMALIES_KEY, ROW_POOLS_KEY}


def test_the_assets_declare_their_upstream_keys_group_and_kinds():
    asset = reconciliation_assets[0]
    for key in (RECONCILIATION_KEY, ANOMALIES_KEY, ROW_POOLS_KEY):
        spec = asset.specs_by_key[key]
        assert spec.group_name == rc.GROUP_NAME
        # the room does not know the engine: definitions.py names it (test_warehouse_interface)
        assert set(spec.kinds) == {WAREHOUSE_KIND, "python"}
        assert {d.asset_key for d in spec.deps} == {
            dg.AssetKey(k)
            for k in (
                ["credits", "credit_histories"],
                ["credits", "credit_events"],
                ["raw", "users"],
                ["raw", "facelesses"],
                ["raw", "videos"],
                ["raw", "real_clones"],
                ["raw", "speeches"],
                ["raw", "extraction_cutoff"],
            )
        }


def _metadata(result, key):
    mats = {m.asset_key: m for m in result.get_asset_materialization_events()}
    return mats[key].materialization.metadata


def test_the_metadata_lists_every_non_ok_user_with_rule_pool_expected_and_actual_largest_first(
    warehouse, tmp_path
):
    with duckdb.connect(warehouse.path) as con:  # user 3 stores 40 purchased credits never bought
        con.execute("update raw.users set extra_credits = 40 where id = 3")
    result = materialize(reconciliation_assets, warehouse, tmp_path)

    meta = _metadata(result, RECONCILIATION_KEY)
    assert meta[NON_OK_TOTAL_METADATA_KEY].value == 2
    table = meta[NON_OK_METADATA_KEY].value
    assert "**2 user(s) not ok**" in table
    rows = [line for line in table.splitlines() if re.match(r"\| \d", line)]
    assert rows == [
        "| 2 | broken_chain | `chain_break` | chain (row 5) | 500 | 400 | 0 | 100 |",
        "| 3 | drift | `balance_drift` | purchased | 0 | 40 | 40 | 40 |",
    ]
    preview = meta["preview"].value
    assert preview.index("| 2 | 365 |") < preview.index("| 3 | 0 |")  # most credits first
    anomalies_preview = _metadata(result, ANOMALIES_KEY)["preview"].value
    first_row = next(line for line in anomalies_preview.splitlines() if line.startswith("| chain"))
    assert re.search(r"\|\s+100 \|", first_row)  # the 100-credit break before the 15-credit rows


def _new_violations(result) -> dict[str, int]:
    return {
        e.check_name: e.metadata[cm.NEW_VIOLATIONS].value
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def test_first_detected_at_keeps_the_first_run_that_reported_a_violation(warehouse, tmp_path):
    first = materialize(reconciliation_assets, warehouse, tmp_path)
    next_cutoff = dt.datetime(2025, 6, 2)
    with duckdb.connect(warehouse.path) as con:  # a day later, a new orphan row appears
        con.execute("update raw.extraction_cutoff set cutoff_at = ?", [next_cutoff])
        con.execute(
            "insert into credits.credit_histories values "
            "(8, 10, 2, null, null, 15, 15, 0.0, 2, timestamp '2025-06-01 12:00:00', "
            "timestamp '2025-06-01 12:00:00')"
        )
    day2 = materialize(reconciliation_assets, warehouse, tmp_path / "day2")
    again = materialize(reconciliation_assets, warehouse, tmp_path / "day2-again")  # no change

    with duckdb.connect(warehouse.path, read_only=True) as con:
        rows = con.execute(
            "select rule, credit_history_id, detected_at, first_detected_at "
            "from marts.ledger_anomalies where rule in ('chain_break', 'orphan_user') "
            "order by rule, credit_history_id"
        ).fetchall()
    assert rows == [
        ("chain_break", 5, next_cutoff, CUTOFF),
        ("orphan_user", 7, next_cutoff, CUTOFF),
        ("orphan_user", 8, next_cutoff, next_cutoff),
    ]
    # the checks (and so the alerts) say how many violations are new since the last run
    orphan_user = rc.CHECK_NAMES[rc.ORPHAN_USER]
    assert _new_violations(first)[orphan_user] >= 1
    assert _new_violations(day2)[orphan_user] == 1  # row 8 only; row 7 was known
    # a re-run at the same cut-off says the same: "new" means first reported at this cut-off
    assert _new_violations(again) == _new_violations(day2)


def test_every_ledger_check_links_its_runbook_section_and_the_runbook_explains_all_13_rules():
    runbook = (REPO_ROOT / RUNBOOK_PATH).read_text()
    for spec in reconciliation_assets[0].check_specs:
        code = spec.metadata[cm.RULE]
        assert f"{RUNBOOK_PATH}#{code}" in spec.description
        section = runbook.split(f'<a id="{code}"></a>', 1)[1].split("<a id=", 1)[0]
        for part in ("What it means", "Likely causes", "Investigate", "```sql"):
            assert part in section, (code, part)


def test_the_summary_says_loudly_when_failing_rules_alert_nobody(warehouse, tmp_path, monkeypatch):
    for name in ch.ALL_CHANNEL_VARS:
        monkeypatch.delenv(name, raising=False)
    silent = _metadata(materialize(reconciliation_assets, warehouse, tmp_path), RECONCILIATION_KEY)
    monkeypatch.setenv(ch.ALERT_WEBHOOK_URL_VAR, "http://127.0.0.1:9/hook")
    heard = _metadata(
        materialize(reconciliation_assets, warehouse, tmp_path / "again"), RECONCILIATION_KEY
    )

    loud = "No alert channel is configured: 4 failing rule(s) alert nobody"
    assert loud in silent["summary"].value
    # short enough for the UI to show inline, the warning included, as is the weekly chart
    assert len(silent["summary"].value) < report.UI_INLINE_MARKDOWN_LIMIT
    chart = silent[WEEKLY_CHART_METADATA_KEY].value
    assert len(chart) < report.UI_INLINE_MARKDOWN_LIMIT and "data:image/svg+xml;base64," in chart
    assert "No alert channel" not in heard["summary"].value


def test_the_trend_counts_weeks_of_the_last_year_and_keeps_undated_anomalies_apart():
    cutoff = dt.datetime(2025, 6, 1, 6)
    con = duckdb.connect()
    con.execute(
        "create temp table ledger as select * from (values (1, timestamp '2025-05-31 10:00:00'), "
        "(2, timestamp '2024-09-01 00:00:00'), (3, timestamp '2023-01-01 00:00:00'), "
        "(4, null::timestamp), (5, timestamp '2025-07-01 00:00:00')) as t(id, created_at)"
    )
    anomalies = con.execute(
        "select * from (values ('chain_break', 1), ('orphan_user', 2), ('orphan_user', 3), "
        "('timestamp_order', 4), ('timestamp_order', 5), ('balance_drift', null::bigint)) "
        "as t(rule, credit_history_id)"
    ).fetch_arrow_table()

    con.register("anomalies", anomalies)
    trend = report.anomaly_trend(con, "anomalies", cutoff, ledger_relation="ledger")

    assert (trend.first_day, trend.last_day) == (dt.date(2024, 6, 3), dt.date(2025, 6, 1))
    assert len(trend.weeks) == report.TREND_WEEKS == 52
    assert trend.per_rule(rc.CHAIN_BREAK)[-1] == 1  # the cut-off's week
    assert sum(trend.per_rule(rc.ORPHAN_USER)) == 1 and trend.before_window == 1
    assert trend.undated == {rc.TIMESTAMP_ORDER: 2, rc.BALANCE_DRIFT: 1}
    assert trend.total(len(trend.weeks) - 1) == 1  # undated rows are NOT on the cut-off's week
    markdown = report.trend_markdown(trend)
    assert "| `timestamp_order` | WARN | 0 | 2 |" in markdown
    assert "data:image/svg+xml;base64," in markdown


def test_more_than_fifty_non_ok_users_list_the_fifty_with_most_credits_and_count_them_all():
    users = list(range(1, 61))  # user n's stored purchased pool is off by 10 * n credits
    shuffled = users[1::2] + users[::2]  # the relations' own order must not matter
    reconciliation = pa.Table.from_pylist(
        [
            {
                "user_id": u,
                "status": rc.STATUS_DRIFT,
                "recorded_subscription_balance": 0,
                "ledger_subscription_balance": 0,
                "recorded_purchased_balance": 10 * u,
                "ledger_purchased_balance": 0,
                "drift": 10 * u,
            }
            for u in shuffled
        ]
        + [  # an ok user is never listed
            {
                "user_id": 99,
                "status": rc.STATUS_OK,
                "recorded_subscription_balance": 5,
                "ledger_subscription_balance": 5,
                "recorded_purchased_balance": 0,
                "ledger_purchased_balance": 0,
                "drift": 0,
            }
        ]
    )
    anomalies = pa.Table.from_pylist(
        [
            {
                "rule": rc.BALANCE_DRIFT,
                "user_id": u,
                "credit_history_id": None,
                "expected": "0",
                "actual": str(10 * u),
                "credits": 10 * u,
            }
            for u in shuffled
        ]
    )

    con = duckdb.connect()
    con.register("reconciliation", reconciliation)
    con.register("anomalies", anomalies)
    non_ok = report.non_ok_users(con, "reconciliation", "anomalies")
    table = report.non_ok_markdown(non_ok)

    assert report.NON_OK_LIMIT == 50
    listed = [int(line.split("|")[1]) for line in table.splitlines() if re.match(r"\| \d", line)]
    assert listed == list(range(60, 10, -1))  # exactly 50, the largest credits at stake first
    total_credits = 10 * sum(users)
    assert f"**60 user(s) not ok**, {total_credits:,} credits at stake in all" in table
    assert "the 50 with most credits at stake" in table
    assert "| 60 | drift | `balance_drift` | purchased | 0 | 600 | 600 | 600 |" in table


def test_every_anomaly_column_is_named_in_the_description_and_documented_in_the_schema():
    for column in ANOMALY_OUTPUT_COLUMNS:
        assert f"`{column}`" in ANOMALIES_DESCRIPTION, column
        assert report.ANOMALY_COLUMN_DOCS.get(column), column
    assert "first_detected_at" in ANOMALY_OUTPUT_COLUMNS
