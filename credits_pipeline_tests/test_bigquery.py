"""The BigQuery path against the local emulator: extraction, the ledger rules, and DuckDB parity.

Production runs on BigQuery; the default path and most tests on DuckDB. What must hold is that
both warehouses end up with the same rows: the same raw copies (partition swaps idempotent), and
the same reconciliation relations from the same ledger. Each test gets datasets of its own behind
a unique prefix on one emulator per session (see bigquery_emulator.py).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from credits_pipeline import settings
from credits_pipeline.extract.assets import extraction_assets, source_table_specs
from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rule_scope as rsc
from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger.fixtures import BASE_TIME, load_inputs
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.reconcile import reconcile
from credits_pipeline.ledger.store import read_reports, write_reconciliation
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.warehouse import session
from credits_pipeline_tests.bigquery_emulator import (  # noqa: F401
    SUBPROCESS_PRELUDE,
    bigquery_emulator,
    emulator_env,
    emulator_warehouse,
    unique_prefix,
)
from credits_pipeline_tests.harness import (
    assert_same_rows,
    clean_ledger,
    ledger_row,
    run_extraction,
    step_failure_messages,
    ts,
    warehouse_fingerprint,
    write_source,
)
from credits_pipeline_tests.test_ledger_resume import ledger_rows, random_ledger

pytestmark = pytest.mark.bigquery

RAW_COMPARED = (
    "credit_histories",
    "credit_histories__open",
    "users",
    "credit_events",
    "videos",
    "credit_histories__rejected",
    "_ledger_partitions",
)


def _run_bigquery_extraction(
    instance, source_url, warehouse, first="2025-01-01", last="2025-01-05"
):
    defs = dg.Definitions(
        assets=[*source_table_specs, *extraction_assets],
        resources={"source": SourceDatabase(url=source_url), "warehouse": warehouse},
        executor=dg.in_process_executor,
    )
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _bigquery_rows(warehouse, relation: str) -> list[str]:
    with warehouse.connect(read_only=True) as con:
        return sorted(map(repr, con.execute(f"select * from raw.{relation}").fetchall()))


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def test_extraction_into_bigquery_loads_the_same_rows_as_duckdb_and_a_rerun_replaces_only_its_days(
    bigquery_emulator,
    instance,
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    ledger = clean_ledger()
    ledger[1]["meta"] = "{not json"  # quarantined with its reason
    ledger.append(ledger_row(6, 2, 2, 15, 500, ts(2, 5), event_type=3))  # odd domain: loads
    write_source(url, ledger)
    duck_path = str(tmp_path / "warehouse.duckdb")
    duck = run_extraction(instance, url, duck_path)
    assert duck.success, step_failure_messages(duck)
    warehouse = emulator_warehouse(bigquery_emulator)

    first = _run_bigquery_extraction(instance, url, warehouse)
    assert first.success, [
        str(
            e.event_specific_data.error.cause.message
            if e.event_specific_data.error.cause
            else e.event_specific_data.error.message
        )[:1500]
        for e in first.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ][:2]
    expected = warehouse_fingerprint(duck_path)
    loaded = {name: _bigquery_rows(warehouse, name) for name in RAW_COMPARED}
    for name in RAW_COMPARED:
        assert loaded[name] == expected[name], name
    assert len(loaded["credit_histories__rejected"]) == 1

    # re-running the same range is idempotent: the same rows, no duplicates, nothing else touched
    again = _run_bigquery_extraction(instance, url, warehouse)
    assert again.success, step_failure_messages(again)
    assert {name: _bigquery_rows(warehouse, name) for name in RAW_COMPARED} == loaded

    # re-running one day replaces exactly that day
    with warehouse.connect() as con:
        con.execute("delete from raw.credit_histories where _partition = ?", [dt.date(2025, 1, 2)])
        con.execute(
            "insert into raw.credit_histories (id, user_id, _partition) values (999, 9, ?)",
            [dt.date(2025, 1, 3)],
        )
    one_day = _run_bigquery_extraction(
        instance, url, warehouse, first="2025-01-02", last="2025-01-02"
    )
    assert one_day.success, step_failure_messages(one_day)
    rows = _bigquery_rows(warehouse, "credit_histories")
    assert rows == sorted(
        [*loaded["credit_histories"], repr((999, 9, *[None] * 13, dt.date(2025, 1, 3)))]
    )
    # quarantine rows carry the label of the range that read them, on both warehouses alike
    duck_day = run_extraction(instance, url, duck_path, first="2025-01-02", last="2025-01-02")
    assert duck_day.success, step_failure_messages(duck_day)
    assert (
        _bigquery_rows(warehouse, "credit_histories__rejected")
        == warehouse_fingerprint(duck_path)["credit_histories__rejected"]
    )


def _inputs_to_bigquery(duck: duckdb.DuckDBPyConnection, con) -> None:
    for name in sql.INPUT_RELATIONS:
        con.register("_input", duck.execute(f"select * from {name}").to_arrow_table())
        con.execute(f"create or replace temp table {name} as select * from _input")
        con.unregister("_input")


def _as_rows(reports) -> tuple[list[dict], list[dict]]:
    anomalies = reports.anomalies.to_pylist()
    return reports.reconciliation.to_pylist(), anomalies


def test_the_ledger_rules_and_the_replay_give_identical_relations_on_bigquery_and_duckdb(
    bigquery_emulator,
):
    at = lambda seconds: BASE_TIME + dt.timedelta(seconds=seconds)  # noqa: E731
    faceless = ("faceless", 1)
    rows = [
        row(1, 1, "subscribe_to_trial", 10_000, 0),
        row(2, 1, "idea_discovered", 15, 10_000, event_type=1),  # event_type_mismatch
        row(3, 1, "idea_discovered", 15, 9_990, created_at=at(10)),  # chain_break, timestamp_order
        row(4, 1, "faceless_video_generated", 13, 9_970, creditable=faceless),
        row(5, 1, "faceless_video_generated", 13, 9_957, creditable=faceless, created_at=at(250)),
        row(6, 1, "refunded_credits", 100, 9_944, creditable=faceless),  # excess_refund
        row(7, 2, "monthly_credits_added", 5, 0),
        row(8, 2, "monthly_credits_added", 5, 5),  # duplicate_monthly_release
        row(
            9, 3, "idea_discovered", 15, 0, created_at=None
        ),  # orphan_user, overdraft, NULL created_at
        row(10, 2, 999, 7, 10, event_type=2),  # orphan_event
        row(
            11, 2, "ai_image_generated", 3, 3, creditable=("real_clone", 5)
        ),  # pricing, orphan_creditable
    ]
    content = {
        "facelesses": [{"id": 1, "user_id": 1, "video_id": 1}],
        "videos": [
            {"id": 1, "user_id": 1, "type": "faceless", "status": "completed"},
            {"id": 2, "user_id": 2, "type": "custom", "status": "completed"},
        ],
        "speeches": [{"id": 1, "user_id": 2, "status": "completed"}],
    }
    cutoff = dt.datetime(2025, 6, 1)
    duck = duckdb.connect()
    duck.execute("set timezone = 'UTC'")
    load_inputs(duck, rows=rows, users=((1, 9_800, 0), (2, 10, 5), (4, 0, 0)), **content)
    expected = read_reports(duck, reconcile(duck, cutoff))
    assert len({a["rule"] for a in expected.anomalies.to_pylist()}) >= 10

    warehouse = emulator_warehouse(bigquery_emulator)
    with warehouse.connect() as con:
        _inputs_to_bigquery(duck, con)
        actual = read_reports(con, reconcile(con, cutoff))
    assert _as_rows(actual) == _as_rows(expected)
    assert actual.result.summaries == expected.result.summaries
    assert actual.result.status_counts == expected.result.status_counts


def test_a_resumed_replay_on_bigquery_reports_what_a_full_replay_on_duckdb_reports(
    bigquery_emulator,
):
    """Two daily runs on the emulator: the second resumes from the state the first stored there."""
    everything = ledger_rows(random_ledger(21, n_rows=300, n_users=10))
    users = [(u, 50, 0) for u in range(1, 12)]
    day_one = [r for r in everything if r["id"] <= 700]
    changed = next(r for r in day_one if r["user_id"] == 4) | {"amount": 77}
    # the next day's rows: users 1-5 only, so the others' anomalies are the stored ones
    day_two = [
        changed if r["id"] == changed["id"] else r
        for r in everything
        if r["id"] <= 700 or r["user_id"] <= 5
    ]
    day_two.append(row(2000, 11, "custom_credit_purchased", 40, 40))
    cutoff = dt.datetime(2025, 6, 1)
    warehouse = emulator_warehouse(bigquery_emulator)
    results = []
    for rows_now in (day_one, day_two):
        duck = duckdb.connect()
        duck.execute("set timezone = 'UTC'")
        load_inputs(duck, rows=rows_now, users=users)
        expected = read_reports(duck, reconcile(duck, cutoff))
        with warehouse.connect() as con:  # as the asset runs it: the write in a transaction
            _inputs_to_bigquery(duck, con)
            # pages of 40 rows: the replay streams its input from BigQuery in bounded batches
            actual = read_reports(con, reconcile(con, cutoff, keep_state=True, batch_rows=40))
            with session.transaction(con):
                write_reconciliation(con, actual.result)
        assert _as_rows(actual) == _as_rows(expected)
        results.append(actual)
    first, second = results
    assert first.result.replay_mode == rs.MODE_FULL
    assert second.result.replay_mode == rs.MODE_RESUMED and second.result.dirty_users == 1
    assert 0 < second.result.replayed_rows < len(day_two) / 2
    # the per-user rules too, for the users with new rows and the changed one: from the
    # fingerprints and the stored anomalies on BigQuery (its string hash is `farm_fingerprint`)
    assert second.result.rules_mode == rsc.MODE_SCOPED, second.result.rules_reason
    with_new_rows = {r["user_id"] for r in day_two if r["id"] > 700}
    assert second.result.rule_scope_users == len(with_new_rows | {changed["user_id"]}) < 11
    with warehouse.connect(read_only=True) as con:
        stored = con.execute(
            "select * from marts.user_balance_reconciliation order by user_id"
        ).fetchall()
        checkpoint = con.execute(
            f"select through_id, mode from credits.{rs.CHECKPOINT_TABLE}"
        ).fetchall()
    assert [tuple(r.values()) for r in second.reconciliation.to_pylist()] == [
        tuple(r) for r in stored
    ]
    assert checkpoint == [(2000, rs.MODE_RESUMED)]


def test_a_failure_inside_a_bigquery_transaction_leaves_the_previous_rows(bigquery_emulator):
    warehouse = emulator_warehouse(bigquery_emulator)
    with warehouse.connect() as con:
        con.execute("create table if not exists raw.t (id bigint)")
        con.execute("insert into raw.t values (1), (2)")
    with pytest.raises(RuntimeError, match="crash mid-swap"), warehouse.transaction() as con:
        con.execute("delete from raw.t")
        con.execute("insert into raw.t values (3)")
        raise RuntimeError("crash mid-swap")
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select id from raw.t order by id").fetchall() == [(1,), (2,)]


DEMO_USERS = 60
DEMO_MONTHS = 6
# daily partitions for the last 20 days (each a load job on the emulator), older rows open
PARTITION_DAYS = 20
# What the reconciliation writes: both reports and the replay's pools around every row (which the
# marts read), compared exactly.
REPORTS = (
    "marts.user_balance_reconciliation",
    "marts.ledger_anomalies",
    "credits.ledger_row_pools",
)
# What dbt builds on BigQuery, compared with floats rounded (sums of doubles may add up in another
# order).
DBT_RELATIONS = (
    "credits.int_credit_replay",
    "marts.user_credit_daily",
    "marts.user_credit_trends",
    "marts.service_efficiency",
    "marts.plan_utilization",
    "marts.revenue_attribution",
    "marts.credit_cohorts",
    # the fraud signals, whose evidence lists ledger row ids (the same ids on both engines)
    "marts.usage_risk_signals",
    # the snapshot of stored balances, as the history mart reads it
    "marts.user_stored_balance_history",
)


def _materialize(
    workdir, source_url: str, cutoff_at: dt.datetime, **extra_env: str
) -> subprocess.CompletedProcess:
    """`credits-pipeline materialize` in a subprocess, as test_end_to_end.py runs it."""
    workdir.mkdir()
    today = dt.datetime.now(dt.UTC).date()
    env = {
        **os.environ,
        settings.SOURCE_URL_VAR: source_url,
        settings.WAREHOUSE_PATH_VAR: str(workdir / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (today - dt.timedelta(days=PARTITION_DAYS)).isoformat(),
        settings.CUTOFF_AT_VAR: cutoff_at.isoformat(),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        **extra_env,
    }
    code = (
        f"{SUBPROCESS_PRELUDE}\n"
        "from credits_pipeline.cli import main\n"
        "raise SystemExit(main(['materialize', '--log-level', 'WARNING']))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200
    )


def _duckdb_rows(path, relation: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(con.execute(f"select * from {relation}").fetchall(), key=repr)
    finally:
        con.close()


def test_the_anomalies_demo_through_extraction_dbt_and_reconciliation_on_bigquery_reports_as_duckdb(
    bigquery_emulator,
    tmp_path,
):
    from credits_pipeline.source.demo import generate

    source_url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    generate(source_url, users=DEMO_USERS, seed=11, months=DEMO_MONTHS, anomalies=True)
    # the demo writes nothing at or after today's midnight: the same pinned cut-off for both runs
    cutoff_at = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time())
    duck = _materialize(tmp_path / "duckdb", source_url, cutoff_at)
    assert duck.returncode == 0, duck.stdout[-3000:] + duck.stderr[-3000:]
    prefix = unique_prefix()
    bq = _materialize(
        tmp_path / "bigquery", source_url, cutoff_at, **emulator_env(bigquery_emulator, prefix)
    )
    assert bq.returncode == 0, bq.stdout[-3000:] + bq.stderr[-3000:]
    assert "dbt build errored" not in bq.stdout + bq.stderr

    warehouse = emulator_warehouse(bigquery_emulator, prefix)
    for relation in REPORTS:
        expected = _duckdb_rows(tmp_path / "duckdb" / "warehouse.duckdb", relation)
        with warehouse.connect(read_only=True) as con:
            actual = sorted(con.execute(f"select * from {relation}").fetchall(), key=repr)
        assert len(expected) > 0, relation
        assert actual == expected, relation
    for relation in DBT_RELATIONS:
        expected = _duckdb_rows(tmp_path / "duckdb" / "warehouse.duckdb", relation)
        with warehouse.connect(read_only=True) as con:
            actual = con.execute(f"select * from {relation}", dialect="bigquery").fetchall()
        assert len(expected) > 0, relation
        assert_same_rows(actual, expected, relation)
    rules = {
        row[0]
        for row in _duckdb_rows(tmp_path / "duckdb" / "warehouse.duckdb", "marts.ledger_anomalies")
    }
    assert len(rules) >= 10


def test_writing_the_reports_on_bigquery_runs_no_ddl_inside_a_transaction(bigquery_emulator):
    # BigQuery forbids DDL on permanent tables inside a transaction; the emulator does not: record
    # it
    duck = duckdb.connect()
    duck.execute("set timezone = 'UTC'")
    load_inputs(
        duck,
        rows=[row(1, 1, "subscribe_to_trial", 500, 0), row(2, 1, "idea_discovered", 15, 400)],
        users=((1, 485, 0), (2, 0, 0)),
    )
    warehouse = emulator_warehouse(bigquery_emulator)
    ddl_in_transaction: list[str] = []
    with warehouse.transaction() as con:
        _inputs_to_bigquery(duck, con)
        result = reconcile(con, dt.datetime(2025, 6, 1), keep_state=True)  # the replay state too
        reports = read_reports(con, result)
        query, client = con.query, con.client

        def recording_query(statement, query_params=None):
            words = statement.lower().split(None, 4)
            temporary = "temp" in words or "temporary" in words  # a session temp table: allowed
            if con.in_transaction and words[0] in ("create", "drop", "alter") and not temporary:
                ddl_in_transaction.append(statement)
            return query(statement, query_params)

        def recording(name):
            method = getattr(client, name)

            def call(*args, **kwargs):
                if con.in_transaction:
                    ddl_in_transaction.append(name)
                return method(*args, **kwargs)

            return call

        con.query = recording_query
        client.create_table, client.delete_table = (
            recording("create_table"),
            recording("delete_table"),
        )
        con.execute("create or replace temp table _earlier_work (id bigint)")
        write_reconciliation(con, result)
        write_reconciliation(
            con, result
        )  # a second write replaces the rows, it does not add to them
    assert ddl_in_transaction == []
    with warehouse.connect(read_only=True) as con:
        reconciliation = con.execute(
            "select * from marts.user_balance_reconciliation order by user_id"
        ).fetchall()
        anomalies = con.execute("select count(*) from marts.ledger_anomalies").fetchone()[0]
        state = con.execute(f"select user_id, rows from credits.{rs.STATE_TABLE}").fetchall()
        checkpoint = con.execute(f"select through_id from credits.{rs.CHECKPOINT_TABLE}").fetchall()
    assert reconciliation == [tuple(r.values()) for r in reports.reconciliation.to_pylist()]
    assert anomalies == reports.anomalies.num_rows > 0
    assert state == [(1, 2)] and checkpoint == [(2,)]
