"""The incremental replay and daily mart: a resumed run equals a full rebuild of the same data.

The hand-written ledger of test_dbt_models.py is built as of day 1 (cut-off 2025-03-31 03:00).
Day 2 (cut-off 2025-04-01 03:00) closes 03-31 and brings a new user, a late commit (an id below
its user's last replayed id), a future-dated row (its day is capped at the cut-off), a purchase
and an overdraft. `dbt build` then runs incrementally on day 2 (and day 3), and every table it
keeps — the replay, the daily mart and the marts built from them — must equal, row for row, a
`--full-refresh` build of the same raw tables.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.bigquery_emulator import bigquery_emulator  # noqa: F401
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest
from credits_pipeline_tests.harness import assert_same_rows
from credits_pipeline_tests.test_dbt_models import EVENT_ID, T, write_fixture_warehouse

# What the runs keep, compared row for row with a full rebuild.
COMPARED = {
    "credits.int_credit_replay": "credit_history_id",
    "marts.user_credit_daily": "user_id, balance_date",
    "marts.user_credit_trends": "user_id",
    "marts.plan_utilization": "all",
    "marts.credit_cohorts": "all",
    "marts.service_efficiency": "all",
    "marts.revenue_attribution": "all",
}

DAY_2_CUTOFF = T(2025, 4, 1, 3, 0)
# id, user, event, amount, previous_amount, created_at, in the open snapshot
DAY_2_ROWS = [
    # user 1 goes on from the day-1 state (498 + 50 purchased)
    (112, 1, "ai_image_generated", 1, 498, T(2025, 3, 31, 9, 0), False),
    # a purchase, then a spend the subscription pool cannot cover (drawn from the purchased pool)
    (113, 1, "custom_credit_purchased", 500, 550, T(2025, 3, 31, 10, 0), False),
    (114, 1, "real_clone_generated", 600, 497, T(2025, 3, 31, 11, 0), False),
    # future-dated: its day is capped at the cut-off's day, 04-01
    (115, 1, "ai_image_generated", 1, 497, T(2025, 4, 5, 8, 0), True),
    # a late commit: user 2's last replayed id is 206
    (150, 2, "ai_image_generated", 1, 69, T(2025, 3, 31, 12, 0), False),
    # a new user, with an overdraft: 600 charged with 500 + 0 in the pools
    (401, 4, "subscribe_to_trial", 500, 0, T(2025, 3, 31, 20, 0), False),
    (402, 4, "real_clone_generated", 600, 500, T(2025, 4, 1, 1, 0), True),
]
DAY_3_CUTOFF = T(2025, 4, 2, 3, 0)
DAY_3_ROWS = [
    (403, 4, "monthly_credits_added", 100, 0, T(2025, 4, 2, 1, 0), True),
]


def _ledger_values(row) -> list:
    history_id, user_id, event, amount, previous, created, _ = row
    event_type = 2 if event.endswith("generated") else 1
    return [
        history_id,
        user_id,
        EVENT_ID[event],
        None,
        None,
        event,
        None,
        1,
        0,
        amount,
        previous,
        event_type,
        "[]",
        created,
        created,
    ]


def advance_to(warehouse: Path, cutoff: dt.datetime, rows: list[tuple]) -> None:
    """Extract one more day as the extraction would: the previous open day closes into its
    partition, the new rows land in their day's partition or in the new open snapshot."""
    closed_before = dt.datetime.combine(cutoff.date(), dt.time())
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            "insert into raw.credit_histories select * exclude (_partition),"
            " cast(created_at as date) from raw.credit_histories__open"
            " where created_at < ? and id not in (select id from raw.credit_histories)",
            [closed_before],
        )
        # the rows still open (later, or without created_at) stay in the new open snapshot
        con.execute("delete from raw.credit_histories__open where created_at < ?", [closed_before])
        for row in rows:
            open_row = row[-1]
            table = "credit_histories__open" if open_row else "credit_histories"
            con.execute(
                f"insert into raw.{table} values ({', '.join('?' * 16)})",
                [*_ledger_values(row), None if open_row else row[5].date()],
            )
        con.execute(
            "insert into raw.users select 4, null, 1, null, null, 100, null, 0, ?, ?"
            " where not exists (select 1 from raw.users where id = 4)",
            [T(2025, 3, 31, 20), T(2025, 3, 31, 20)],
        )
        con.execute(
            "update raw.extraction_cutoff set cutoff_at = ?, ledger_closed_before = ?",
            [cutoff, closed_before],
        )
    finally:
        con.close()


def dbt_build(warehouse: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, str]:
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(warehouse))
    with dbt_environment():
        invocation = dbt_resource().cli(["build", *args], raise_on_error=False)
    invocation.wait()
    results = invocation.get_artifact("run_results.json")["results"]
    statuses = {r["unique_id"]: r["status"] for r in results}
    errors = {
        uid: r.get("message")
        for uid, r in ((r["unique_id"], r) for r in results)
        if r["status"] in ("error", "fail")
    }
    assert invocation.is_successful() and not errors, errors or invocation.get_error()
    return statuses


# Bookkeeping columns: when a row was (re)computed differs between runs by design.
RUN_COLUMNS = ("replayed_at",)


def rows(
    warehouse: Path, relation: str, order_by: str, with_run_columns: bool = False
) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        columns = [c[0] for c in con.execute(f"select * from {relation} limit 0").description]
        kept = [c for c in columns if with_run_columns or c not in RUN_COLUMNS]
        return con.execute(
            f"select {', '.join(kept)} from {relation} order by {order_by}"
        ).fetchall()
    finally:
        con.close()


def latest_delta_ids(warehouse: Path) -> list[int]:
    """The ledger ids the newest replay run (re)computed, from the delta's log."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return [
            r[0]
            for r in con.execute(
                "select credit_history_id from credits.int_credit_replay_delta where replayed_at "
                "= (select max(replayed_at) from credits.int_credit_replay_delta) order by 1"
            ).fetchall()
        ]
    finally:
        con.close()


def full_rebuild_of(warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the warehouse, rebuilt with --full-refresh."""
    copy = tmp_path / f"full_{warehouse.stem}.duckdb"
    shutil.copy(warehouse, copy)
    dbt_build(copy, monkeypatch, "--full-refresh")
    return copy


@pytest.fixture(scope="module", autouse=True)
def _manifest():
    prepare_manifest()


@pytest.fixture
def day_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    warehouse = tmp_path / "incremental.duckdb"
    write_fixture_warehouse(warehouse)
    dbt_build(warehouse, monkeypatch)
    return warehouse


def assert_equal_to_a_full_rebuild(warehouse: Path, tmp_path: Path, monkeypatch) -> None:
    full = full_rebuild_of(warehouse, tmp_path, monkeypatch)
    for relation, order_by in COMPARED.items():
        incremental_rows = rows(warehouse, relation, order_by)
        assert incremental_rows, relation
        # doubles summed in another order (DuckDB's parallel sums) may differ in the last bits
        assert_same_rows(incremental_rows, rows(full, relation, order_by), relation)


# ------------------------------------------------------------------------------------------------


def test_an_incremental_replay_after_new_rows_equals_a_full_rebuild(day_1, tmp_path, monkeypatch):
    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch)
    assert_equal_to_a_full_rebuild(day_1, tmp_path, monkeypatch)
    replay = {r[0]: r for r in rows(day_1, "credits.int_credit_replay", "credit_history_id")}
    # the future-dated row counts on the cut-off's day; the overdraft writes off 100
    assert replay[115][10] == dt.date(2025, 4, 1)
    assert replay[402][18] == 100
    # the late commit is replayed in its place: user 2's rows after it are numbered after it
    assert [replay[i][11] for i in (150, 201, 206)] == [1, 2, 7]


def test_a_second_incremental_day_moves_the_capped_row_and_still_equals_a_full_rebuild(
    day_1, tmp_path, monkeypatch
):
    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch)
    advance_to(day_1, DAY_3_CUTOFF, DAY_3_ROWS)
    dbt_build(day_1, monkeypatch)
    assert_equal_to_a_full_rebuild(day_1, tmp_path, monkeypatch)
    replay = {r[0]: r for r in rows(day_1, "credits.int_credit_replay", "credit_history_id")}
    assert replay[115][10] == dt.date(2025, 4, 2)  # still in the future: capped at the new day


def test_an_incremental_run_replays_only_the_new_rows_and_the_users_it_must_replay_again(
    day_1, monkeypatch
):
    before = rows(day_1, "credits.int_credit_replay", "credit_history_id")
    daily_before = rows(day_1, "marts.user_credit_daily", "user_id, balance_date")
    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch)
    user_2_ids = [r[0] for r in before if r[1] == 2]
    # user 1 resumes from its last row: only its new rows; user 2 (late commit) is replayed from
    # its first row; user 4 is new. Nothing else is read again.
    assert latest_delta_ids(day_1) == sorted([112, 113, 114, 115, 150, 401, 402, *user_2_ids])
    # the stored rows of user 1 are untouched
    after = {r[0]: r for r in rows(day_1, "credits.int_credit_replay", "credit_history_id")}
    assert [after[r[0]] for r in before if r[1] == 1] == [r for r in before if r[1] == 1]
    # the daily mart recomputed user 1 from its last stored day on (03-31): its days before are
    # the stored ones
    kept = [r for r in daily_before if r[0] == 1 and r[1] < dt.date(2025, 3, 31)]
    assert len(kept) == 9
    assert [
        r
        for r in rows(day_1, "marts.user_credit_daily", "user_id, balance_date")
        if r[0] == 1 and r[1] < dt.date(2025, 3, 31)
    ] == kept


def test_a_run_without_new_rows_reads_nothing_again_and_changes_nothing(day_1, monkeypatch):
    before = {
        relation: rows(day_1, relation, order_by, with_run_columns=True)
        for relation, order_by in COMPARED.items()
    }
    log_before = rows(
        day_1, "credits.int_credit_replay_delta", "credit_history_id", with_run_columns=True
    )
    dbt_build(day_1, monkeypatch)
    # the run appended nothing to the replay's log, and no stored row was recomputed
    assert (
        rows(day_1, "credits.int_credit_replay_delta", "credit_history_id", with_run_columns=True)
        == log_before
    )
    for relation, order_by in COMPARED.items():
        assert rows(day_1, relation, order_by, with_run_columns=True) == before[relation], relation


def test_a_daily_mart_build_that_was_missed_is_caught_up_by_the_next_run(
    day_1, tmp_path, monkeypatch
):
    """Day 2's replay runs but its mart build does not (a failed step, a retry of the replay
    alone); day 3's run must still take in day 2's changes, the late commit's above all."""
    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch, "--exclude", "user_credit_daily+")
    dbt_build(day_1, monkeypatch, "--select", "+int_credit_replay")  # a retry: nothing new
    advance_to(day_1, DAY_3_CUTOFF, DAY_3_ROWS)
    dbt_build(day_1, monkeypatch)
    assert_equal_to_a_full_rebuild(day_1, tmp_path, monkeypatch)
    # without the log the mart would have missed user 2's late commit: its days moved
    daily = rows(day_1, "marts.user_credit_daily", "user_id, balance_date")
    assert any(r[0] == 2 and r[1] == dt.date(2025, 3, 31) for r in daily)


# ------------------------------------------------------------------------------------------------
# On BigQuery (the emulator): the replay, partitioned by day, clustered by user, merged by id


RAW_TABLES = (
    "credit_events",
    "users",
    "plans",
    "subscriptions",
    "purchases",
    "credit_histories",
    "credit_histories__open",
    "extraction_cutoff",
    "videos",
    "facelesses",
    "real_clones",
    "speeches",
    "captions",
)


def _raw_to_bigquery(duck_path: Path, warehouse) -> None:
    duck = duckdb.connect(str(duck_path), read_only=True)
    try:
        with warehouse.connect() as con:
            for name in RAW_TABLES:
                con.load_arrow(
                    duck.execute(f"select * from raw.{name}").to_arrow_table(), "raw", name
                )
    finally:
        duck.close()


def _bigquery_dbt_build(endpoint: str, prefix: str, monkeypatch, *args: str) -> None:
    from dagster_dbt import DbtCliResource

    from credits_pipeline.transform.dbt_project import dbt_executable
    from credits_pipeline_tests.bigquery_emulator import emulator_env

    for name, value in emulator_env(endpoint, prefix).items():
        monkeypatch.setenv(name, value)
    dbt = DbtCliResource(
        project_dir=str(settings.DBT_PROJECT_DIR),
        profiles_dir=str(settings.DBT_PROJECT_DIR),
        target="bigquery",
        dbt_executable=dbt_executable(),
    )
    # models only: the tests are the DuckDB suite's (raw types here come from a DuckDB copy)
    invocation = dbt.cli(
        ["build", "--select", "+user_credit_daily", "--exclude-resource-type", "test", *args],
        raise_on_error=False,
    )
    invocation.wait()
    results = invocation.get_artifact("run_results.json")["results"]
    errors = {r["unique_id"]: r.get("message") for r in results if r["status"] in ("error", "fail")}
    assert invocation.is_successful() and not errors, errors or invocation.get_error()
    return invocation.target_path


@pytest.mark.bigquery
def test_an_incremental_replay_on_bigquery_equals_a_full_rebuild(
    bigquery_emulator,
    tmp_path,
    monkeypatch,
):
    from credits_pipeline_tests.bigquery_emulator import emulator_warehouse, unique_prefix

    endpoint = bigquery_emulator
    duck_path = tmp_path / "ledger.duckdb"
    write_fixture_warehouse(duck_path)
    incremental, full = unique_prefix(), unique_prefix()
    _raw_to_bigquery(duck_path, emulator_warehouse(endpoint, incremental))
    _bigquery_dbt_build(endpoint, incremental, monkeypatch)
    with emulator_warehouse(endpoint, incremental).connect(read_only=True) as con:
        user_2_days = {
            str(d)
            for (d,) in con.execute(
                "select distinct balance_date from credits.int_credit_replay where user_id = 2"
            ).fetchall()
        }
    advance_to(duck_path, DAY_2_CUTOFF, DAY_2_ROWS)
    for prefix in (incremental, full):
        _raw_to_bigquery(duck_path, emulator_warehouse(endpoint, prefix))
    target_path = _bigquery_dbt_build(endpoint, incremental, monkeypatch)
    _bigquery_dbt_build(endpoint, full, monkeypatch, "--full-refresh")
    compared = {
        "credits.int_credit_replay": "credit_history_id",
        "marts.user_credit_daily": "user_id, balance_date",
    }
    for relation, order_by in compared.items():
        found = {}
        for prefix in (incremental, full):
            with emulator_warehouse(endpoint, prefix).connect(read_only=True) as con:
                found[prefix] = con.execute(
                    f"select * except ({', '.join(RUN_COLUMNS)}) from {relation} order by "
                    f"{order_by}",
                    dialect="bigquery",
                ).fetchall()
        assert found[incremental], relation
        assert found[incremental] == found[full], relation
    # the merge read only the days the replaced rows were stored on: user 2's of day 1 (its late
    # commit replays it again), not user 1's nor user 3's
    merge_sql = next(Path(target_path, "run").rglob("int_credit_replay.sql")).read_text()
    pruned = re.search(r"DBT_INTERNAL_DEST\.balance_date in \(([^)]*\))*\)", merge_sql)
    assert pruned, merge_sql
    assert set(re.findall(r"'(\d{4}-\d{2}-\d{2})'", pruned.group(0))) == user_2_days


def test_a_full_refresh_asked_for_in_the_run_config_rebuilds_the_replay_and_its_log(
    day_1, tmp_path, monkeypatch
):
    import dagster as dg

    from credits_pipeline_tests.dbt_duckdb import dbt_credit_models

    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch)  # the log now holds two runs
    runs = "select count(distinct replayed_at) from credits.int_credit_replay_delta"
    assert duckdb_value(day_1, runs) == 2
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(day_1))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [dbt_credit_models],
            instance=instance,
            resources={"dbt": dbt_resource(), "warehouse": DuckDBWarehouse(path=str(day_1))},
            run_config={"ops": {"dbt_credit_models": {"config": {"full_refresh": True}}}},
            raise_on_error=False,
        )
    assert result.success
    # one run in the log: the whole ledger replayed again, as a fresh build would
    assert duckdb_value(day_1, runs) == 1
    full = full_rebuild_of(day_1, tmp_path, monkeypatch)
    assert rows(day_1, "credits.int_credit_replay", "credit_history_id") == rows(
        full, "credits.int_credit_replay", "credit_history_id"
    )


def duckdb_value(warehouse: Path, sql: str):
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _delete_from_an_old_closed_day(warehouse: Path) -> int:
    """What the consistent cut does when a closed day lost a row: the day, read again, lacks it."""
    con = duckdb.connect(str(warehouse))
    try:
        deleted = con.execute(
            "select id from raw.credit_histories where _partition < ? order by _partition, id "
            "limit 1",
            [dt.date(2025, 3, 31)],
        ).fetchone()[0]
        con.execute("delete from raw.credit_histories where id = ?", [deleted])
    finally:
        con.close()
    return deleted


def _day_3_after_a_delete_in_an_old_day(day_1: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Day 2 built; then a row deleted from an older closed day, and day 3 extracted."""
    advance_to(day_1, DAY_2_CUTOFF, DAY_2_ROWS)
    dbt_build(day_1, monkeypatch)
    deleted = _delete_from_an_old_closed_day(day_1)
    advance_to(day_1, DAY_3_CUTOFF, DAY_3_ROWS)
    return deleted


def test_a_resumed_dbt_build_alone_keeps_a_row_deleted_from_an_old_day(
    day_1, tmp_path, monkeypatch
):
    """Why the Dagster step looks for vanished rows: dbt's replay reads only its latest days."""
    deleted = _day_3_after_a_delete_in_an_old_day(day_1, monkeypatch)
    dbt_build(day_1, monkeypatch)
    kept = "select count(*) from credits.int_credit_replay where credit_history_id = "
    assert duckdb_value(day_1, f"{kept}{deleted}") == 1


def test_a_row_deleted_from_an_old_closed_day_rebuilds_the_replay_and_the_daily_mart_once(
    day_1, tmp_path, monkeypatch
):
    import dagster as dg

    from credits_pipeline.transform.assets import REBUILT_BECAUSE
    from credits_pipeline_tests.dbt_duckdb import dbt_credit_assets

    deleted = _day_3_after_a_delete_in_an_old_day(day_1, monkeypatch)
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(day_1))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    def materialize() -> dict[str, str]:
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                dbt_credit_assets,
                instance=instance,
                resources={"dbt": dbt_resource(), "warehouse": DuckDBWarehouse(path=str(day_1))},
                raise_on_error=False,
            )
        assert result.success
        return {
            m.asset_key.path[-1]: m.metadata[REBUILT_BECAUSE].value
            for m in result.get_asset_materialization_events()
            for m in [m.materialization]
            if REBUILT_BECAUSE in m.metadata
        }

    rebuilt = materialize()
    assert {"int_credit_replay", "int_credit_replay_delta", "user_credit_daily"} <= set(rebuilt)
    assert "holds rows the ledger no longer has, on 1 day(s)" in rebuilt["int_credit_replay"]
    assert "int_credit_replay_delta was rebuilt" in rebuilt["user_credit_daily"]
    kept = "select count(*) from credits.int_credit_replay where credit_history_id = "
    assert duckdb_value(day_1, f"{kept}{deleted}") == 0
    assert_equal_to_a_full_rebuild(day_1, tmp_path, monkeypatch)
    assert materialize() == {}  # nothing vanished since: the next run resumes again
