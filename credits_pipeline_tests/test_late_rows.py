"""Nothing lost in the daily run: rows written late, rewritten in place or deleted in closed days.

The schedule materializes one ledger partition a day. A row committed late into a day the
warehouse closed already, an old row whose amount was rewritten, a row deleted from an old day:
each must reach the warehouse by the next partition run, and every report and mart must then
equal a full rebuild from scratch. The pure planning helpers are tested directly; the source
fingerprint is checked against its DuckDB definition on every source database, over every
column a row has.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.extract.assets import CLOSED_DAYS_CHECK
from credits_pipeline.extract.catch_up import catch_up_window
from credits_pipeline.extract.fingerprint import DEFINITION as FINGERPRINT_DEFINITION
from credits_pipeline.extract.fingerprint import (
    SOURCE_ROW_FINGERPRINT,
    DayFingerprint,
    StoredFingerprint,
    cut_where,
    day_ranges,
    plan_closed_days,
    source_day_fingerprints,
    source_max_id,
)
from credits_pipeline.warehouse.raw_tables import loaded_ledger_partitions
from credits_pipeline_tests.bigquery_emulator import bigquery_emulator  # noqa: F401
from credits_pipeline_tests.harness import (
    assert_same_rows,
    check_results,
    clean_ledger,
    ledger_as_of_cut,
    ledger_row,
    query,
    run_extraction,
    ts,
    write_source,
)

D = dt.date


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def warehouse(tmp_path) -> str:
    return str(tmp_path / "warehouse.duckdb")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"


def fp(rows: int, id_sum: int = 0) -> DayFingerprint:
    return DayFingerprint(rows, id_sum, 0, 0)


# -- the pure planning helpers ----------------------------------------------------------------


def test_an_unchanged_closed_day_is_not_read_again_and_late_rows_are_read_above_the_lowest_bound():
    stored = {
        D(2025, 1, 1): StoredFingerprint(10, fp(3, 6)),
        D(2025, 1, 2): StoredFingerprint(12, fp(1, 4)),
    }
    source = {
        D(2025, 1, 1): {10: fp(3, 6), 12: fp(3, 6), 20: fp(4, 20)},
        D(2025, 1, 2): {10: fp(1, 4), 12: fp(1, 4), 20: fp(1, 4)},
    }
    plan = plan_closed_days(stored, source, D(2025, 1, 3), 20)
    assert plan.changed == () and plan.first_read == ()
    assert plan.late_after_id == 10
    # the day read later (bound 12) is skipped by the late read up to its own bound
    assert plan.held_through == ((D(2025, 1, 2), 12),)


def test_a_rewritten_or_deleted_row_below_the_bound_marks_its_day_changed():
    stored = {
        D(2025, 1, 1): StoredFingerprint(10, fp(3, 6)),
        D(2025, 1, 2): StoredFingerprint(10, fp(1, 4)),
    }
    rewritten = {D(2025, 1, 1): {10: DayFingerprint(3, 6, 0, 99)}, D(2025, 1, 2): {10: fp(1, 4)}}
    assert plan_closed_days(stored, rewritten, D(2025, 1, 3), 10).changed == (D(2025, 1, 1),)
    emptied = {D(2025, 1, 1): {10: fp(3, 6)}}  # the only row of Jan 2 was deleted
    assert plan_closed_days(stored, emptied, D(2025, 1, 3), 10).changed == (D(2025, 1, 2),)


def test_days_without_a_fingerprint_are_read_once_and_days_after_the_closed_end_are_ignored():
    stored = {D(2025, 1, 5): StoredFingerprint(10, fp(1, 4))}
    source = {
        D(2024, 12, 1): {10: fp(2, 3)},
        D(2025, 1, 5): {10: fp(1, 4)},
        D(2025, 1, 9): {10: fp(5)},
    }
    plan = plan_closed_days(stored, source, D(2025, 1, 6), 10)
    assert plan.first_read == (D(2024, 12, 1),) and plan.changed == ()
    assert plan.reread == (D(2024, 12, 1),)


def test_consecutive_days_are_read_as_one_range():
    days = [D(2025, 1, 3), D(2025, 1, 1), D(2025, 1, 2), D(2025, 1, 7)]
    assert day_ranges(days) == [(D(2025, 1, 1), D(2025, 1, 4)), (D(2025, 1, 7), D(2025, 1, 8))]


def test_the_cut_reads_null_open_late_and_reread_rows_with_bound_values_only():
    stored = {
        D(2025, 1, 1): StoredFingerprint(10, fp(3, 6)),
        D(2025, 1, 2): StoredFingerprint(12, fp(1, 4)),
    }
    source = {D(2025, 1, 1): {10: fp(2, 3)}, D(2025, 1, 2): {12: fp(1, 4)}}
    plan = plan_closed_days(stored, source, D(2025, 1, 3), 20)
    where, params = cut_where(plan, dt.datetime(2025, 1, 3))
    assert "created_at IS NULL" in where and "id > :late_after_id" in where
    assert (
        params["late_after_id"] == 12
    )  # the changed day is read whole: only the other bound counts
    assert params["reread_from_0"] == dt.datetime(2025, 1, 1) and params[
        "reread_to_0"
    ] == dt.datetime(2025, 1, 2)
    assert "2025" not in where and "12" not in where.replace("_1", "")


# -- the source fingerprint covers every column, on every source database --------------------

FINGERPRINT_LEDGER = [
    ledger_row(1, 1, 1, 500, 0, ts(0, 1)),
    ledger_row(2, 1, 2, 15, 500, ts(0, 23.5), creditable_type="video", creditable_id=41),
    ledger_row(3, 2, 1, 500, 0, ts(1, 3), description="Café ✓ renewal", label="Renewed"),
    ledger_row(4, 3, 3, 100, 100, ts(1, 4), meta='{"credits": 100}', updated_at=ts(3, 5)),
    ledger_row(6, 2, 2, 4_000_000_000 // 2, 2**31 + 5, ts(2, 0), calculative_index=7),
    ledger_row(9, 1, 2, 15, 485, None),
]
FINGERPRINT_COLUMNS = {
    "id": "bigint",
    "user_id": "bigint",
    "credit_events_id": "bigint",
    "creditable_type": "varchar",
    "creditable_id": "bigint",
    "description": "varchar",
    "label": "varchar",
    "calculative_index": "bigint",
    "event_value": "bigint",
    "amount": "bigint",
    "previous_amount": "bigint",
    "event_type": "bigint",
    "meta": "varchar",
    "created_at": "timestamp",
    "updated_at": "timestamp",
}


def _warehouse_fingerprints(rows: list[dict]) -> dict[dt.date, DayFingerprint]:
    """The same fingerprint computed by DuckDB with SOURCE_ROW_FINGERPRINT."""
    con = duckdb.connect()
    con.execute(f"create table t ({', '.join(f'{c} {t}' for c, t in FINGERPRINT_COLUMNS.items())})")
    marks = ", ".join("?" for _ in FINGERPRINT_COLUMNS)
    for r in rows:
        con.execute(f"insert into t values ({marks})", [r[c] for c in FINGERPRINT_COLUMNS])
    out = con.execute(
        f"select cast(created_at as date), count(*), sum(id), sum(coalesce(user_id, -1)), "
        f"sum({SOURCE_ROW_FINGERPRINT}) from t where created_at is not null group by 1"
    ).fetchall()
    return {r[0]: DayFingerprint(*(int(v) for v in r[1:])) for r in out}


def _assert_source_fingerprint_is_the_warehouses(url: str) -> None:
    engine = write_source(url, [])
    try:
        with engine.begin() as conn:  # as text: the source holds exactly these JSON texts
            conn.execute(sa.text(_insert_sql()), FINGERPRINT_LEDGER)
        with engine.connect() as conn:
            top = source_max_id(conn)
            got = source_day_fingerprints(conn, [top, 3])
    finally:
        engine.dispose()
    assert top == 9
    expected = _warehouse_fingerprints(FINGERPRINT_LEDGER)
    assert {d: f[9] for d, f in got.items()} == expected
    assert got[D(2025, 1, 2)][3] == _warehouse_fingerprints(FINGERPRINT_LEDGER[2:3])[D(2025, 1, 2)]
    # a row differing from another in one column only, whichever, has another fingerprint
    base = FINGERPRINT_LEDGER[2]
    for column, value in [
        ("creditable_type", "caption"),
        ("creditable_id", 5),
        ("description", "Café ✓ renewal!"),
        ("label", None),
        ("calculative_index", 3),
        ("event_value", 4),
        ("meta", '{"credits": 5}'),
        ("updated_at", ts(4, 0)),
    ]:
        changed = _warehouse_fingerprints([base | {column: value}])[D(2025, 1, 2)]
        assert changed != _warehouse_fingerprints([base])[D(2025, 1, 2)], column


def test_the_source_fingerprint_of_every_column_equals_duckdbs_on_sqlite(sqlite_url):
    _assert_source_fingerprint_is_the_warehouses(sqlite_url)


@pytest.mark.mysql
def test_the_source_fingerprint_of_every_column_equals_duckdbs_on_mariadb(fresh_mysql_url):
    _assert_source_fingerprint_is_the_warehouses(fresh_mysql_url)


@pytest.mark.postgres
def test_the_source_fingerprint_of_every_column_equals_duckdbs_on_postgresql(fresh_postgres_url):
    _assert_source_fingerprint_is_the_warehouses(fresh_postgres_url)


# -- extraction: late, rewritten and deleted rows reach the warehouse -------------------------

LEDGER_TABLES = ("credit_histories", "credit_histories__rejected")


def _source_ledger(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text("select id, amount from credit_histories")).fetchall()


def _partition_run(instance, url, warehouse, day: str):
    return run_extraction(instance, url, warehouse, first=day, last=day)


def _days_ledger() -> list[dict]:
    """Five closed days with three rows each, ids in day order."""
    rows, next_id = [], 1
    for day in range(5):
        for k in range(3):
            rows.append(ledger_row(next_id, 1 + k % 2, 1 if k == 0 else 2, 15, 500, ts(day, 1 + k)))
            next_id += 1
    return rows


def _late_rewrite_delete_scenario(instance, warehouse, url, tmp_path) -> None:
    """Day 5 (Jan 6) is written with a late row for Jan 4 among its ids; then a rewrite and a
    delete in days closed two runs earlier; each partition run leaves the ledger a fresh read
    has. Every cut here is a full check (every closed day compared); the recent checks of
    ordinary days are `test_ledger_read_scope.py`'s."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(settings.LEDGER_FULL_CHECK_DAYS_VAR, "0")
        _late_rewrite_delete_steps(instance, warehouse, url, tmp_path)


def _late_rewrite_delete_steps(instance, warehouse, url, tmp_path) -> None:
    engine = write_source(url, _days_ledger())
    assert run_extraction(instance, url, warehouse, first="2025-01-01", last="2025-01-05").success
    new_day = [
        ledger_row(16, 1, 2, 15, 485, ts(5, 1)),
        ledger_row(17, 2, 2, 15, 485, ts(3, 9)),
        ledger_row(18, 2, 2, 15, 470, ts(5, 3)),
    ]  # id 17: written late, created on Jan 4
    with engine.begin() as conn:
        conn.execute(sa.text(_insert_sql()), new_day)
    result = _partition_run(instance, url, warehouse, "2025-01-06")
    assert result.success
    ids = {r[0] for r in ledger_as_of_cut(warehouse)}
    assert 17 in ids and ids == set(range(1, 19))
    assert query(warehouse, "select _partition from raw.credit_histories where id = 17") == [
        (D(2025, 1, 4),)
    ]
    assert check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)].passed

    # days closed two runs ago: Jan 2 rewritten, Jan 3 loses a row, and on Jan 1 a row is charged
    # to another resource (a column outside the replay's inputs, `updated_at` left as it was)
    with engine.begin() as conn:
        conn.execute(sa.text("update credit_histories set amount = 99 where id = 5"))
        conn.execute(sa.text("delete from credit_histories where id = 8"))
        conn.execute(sa.text("update credit_histories set creditable_id = 77 where id = 2"))
        conn.execute(sa.text(_insert_sql()), [ledger_row(19, 1, 2, 15, 470, ts(6, 2))])
    result = _partition_run(instance, url, warehouse, "2025-01-07")
    assert result.success
    check = check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["closed_days_changed"].value == 3
    mat = result.asset_materializations_for_node("raw_consistent_cut")
    open_meta = next(
        m for m in mat if m.asset_key == dg.AssetKey(["raw", "credit_histories__open"])
    ).metadata
    assert open_meta["closed_days_reread"].value == 3
    assert query(warehouse, "select creditable_id from raw.credit_histories where id = 2") == [
        (77,)
    ]

    ledger = sorted((r[0], r[9]) for r in ledger_as_of_cut(warehouse))
    assert ledger == sorted(_source_ledger(engine))
    # and the same as a warehouse built from scratch at the same point
    fresh = str(tmp_path / "fresh.duckdb")
    assert run_extraction(instance, url, fresh, first="2025-01-01", last="2025-01-07").success
    assert_same_rows(ledger_as_of_cut(warehouse), ledger_as_of_cut(fresh), "ledger as of the cut")
    for table in LEDGER_TABLES:
        assert_same_rows(
            query(warehouse, f"select * from raw.{table}"),
            query(fresh, f"select * from raw.{table}"),
            table,
        )
    # the next run finds nothing changed and reads no closed day again
    result = _partition_run(instance, url, warehouse, "2025-01-07")
    assert check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)].passed
    mat = result.asset_materializations_for_node("raw_consistent_cut")
    open_meta = next(
        m for m in mat if m.asset_key == dg.AssetKey(["raw", "credit_histories__open"])
    ).metadata
    assert open_meta["closed_days_reread"].value == 0


def _insert_sql() -> str:
    cols = list(ledger_row(0, 0, 1, 0, 0, None))
    return (
        f"insert into credit_histories ({', '.join(cols)}) values "
        f"({', '.join(':' + c for c in cols)})"
    )


def test_late_rewritten_and_deleted_rows_reach_the_warehouse_by_the_next_partition_run_on_sqlite(
    instance, warehouse, sqlite_url, tmp_path
):
    _late_rewrite_delete_scenario(instance, warehouse, sqlite_url, tmp_path)


@pytest.mark.mysql
def test_late_rewritten_and_deleted_rows_reach_the_warehouse_by_the_next_partition_run_on_mariadb(
    instance, warehouse, fresh_mysql_url, tmp_path
):
    _late_rewrite_delete_scenario(instance, warehouse, fresh_mysql_url, tmp_path)


@pytest.mark.postgres
def test_late_rewritten_and_deleted_rows_reach_the_warehouse_by_the_next_partition_run_on_postgres(
    instance, warehouse, fresh_postgres_url, tmp_path
):
    _late_rewrite_delete_scenario(instance, warehouse, fresh_postgres_url, tmp_path)


def test_a_warehouse_fingerprinted_before_the_definition_changed_reads_each_closed_day_once(
    instance, warehouse, sqlite_url
):
    """Stored fingerprints of an older definition (a warehouse from before the source fingerprint
    covered every column: no definition recorded) are never compared with the new numbers: every
    closed day is read once more, as a first read, and nothing is reported changed."""
    engine = write_source(sqlite_url, _days_ledger())
    assert run_extraction(
        instance, sqlite_url, warehouse, first="2025-01-01", last="2025-01-05"
    ).success
    before = ledger_as_of_cut(warehouse)
    con = duckdb.connect(warehouse)
    con.execute("drop table raw._ledger_fingerprint_definition")
    con.close()

    def reread(result) -> int:
        assert result.success
        assert check_results(result)[("raw/credit_histories__open", CLOSED_DAYS_CHECK)].passed
        mat = result.asset_materializations_for_node("raw_consistent_cut")
        key = dg.AssetKey(["raw", "credit_histories__open"])
        return next(m for m in mat if m.asset_key == key).metadata["closed_days_reread"].value

    assert reread(_partition_run(instance, sqlite_url, warehouse, "2025-01-05")) == 4
    assert query(warehouse, "select definition from raw._ledger_fingerprint_definition") == [
        (FINGERPRINT_DEFINITION,)
    ]
    assert_same_rows(ledger_as_of_cut(warehouse), before, "ledger as of the cut")
    assert reread(_partition_run(instance, sqlite_url, warehouse, "2025-01-05")) == 0
    engine.dispose()


def test_history_before_the_start_date_is_read_once_then_never_again(
    instance, warehouse, sqlite_url, monkeypatch
):
    ledger = [
        *clean_ledger(),
        ledger_row(6, 1, 1, 500, 0, ts(-40, 1)),
        ledger_row(7, 2, 1, 500, 0, ts(-3, 1)),
    ]
    write_source(sqlite_url, ledger)
    result = run_extraction(instance, sqlite_url, warehouse)  # partitions start 2025-01-01
    assert result.success
    assert query(
        warehouse, "select id, _partition from raw.credit_histories where id in (6, 7) order by id"
    ) == [(6, D(2024, 11, 22)), (7, D(2024, 12, 29))]
    assert query(warehouse, "select id from raw.credit_histories__open order by id") == [(5,)]
    result = run_extraction(instance, sqlite_url, warehouse, first="2025-01-05", last="2025-01-05")
    mat = result.asset_materializations_for_node("raw_consistent_cut")
    open_meta = next(
        m for m in mat if m.asset_key == dg.AssetKey(["raw", "credit_histories__open"])
    ).metadata
    assert open_meta["dagster/row_count"].value == 1 and open_meta["closed_days_reread"].value == 0
    assert {r[0] for r in ledger_as_of_cut(warehouse)} == {1, 2, 3, 4, 5, 6, 7}


# -- the whole pipeline: a partition run equals a full rebuild ---------------------------------

from credits_pipeline_tests.test_end_to_end import NEXT_DAY_COMPARED, _relation_rows  # noqa: E402

E2E_USERS = 40
E2E_MONTHS = 2
E2E_PARTITION_DAYS = 30  # about a month of history before the first partition: read once


def _cli(
    home: Path, url: str, cutoff: dt.datetime, *args: str, env: dict[str, str] | None = None
) -> str:
    today = dt.datetime.now(dt.UTC).date()
    env = {
        **os.environ,
        **(env or {}),
        settings.SOURCE_URL_VAR: url,
        settings.WAREHOUSE_PATH_VAR: str(home / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (today - dt.timedelta(days=E2E_PARTITION_DAYS)).isoformat(),
        settings.CUTOFF_AT_VAR: cutoff.isoformat(),
        "DAGSTER_HOME": str(home / "dagster_home"),
    }
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "credits_pipeline.cli",
            "materialize",
            "--log-level",
            "WARNING",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _differences_from_a_full_rebuild(
    tmp_path: Path, daily: Path, url: str, cutoff: dt.datetime, name: str
) -> list[str]:
    """Rebuild from scratch at the same cut-off; the relations whose rows differ from `daily`'s."""
    full = tmp_path / name
    _cli(full, url, cutoff)
    differ = []
    for relation in NEXT_DAY_COMPARED:
        kept = _relation_rows(daily / "warehouse.duckdb", relation)
        assert kept, relation
        try:
            assert_same_rows(
                kept, _relation_rows(full / "warehouse.duckdb", relation), f"{name}: {relation}"
            )
        except AssertionError:
            differ.append(relation)
    return differ


def _copy_rows(
    engine: sa.Engine, ids: list[int], new_ids: list[int], stamps: list[dt.datetime]
) -> None:
    """New ledger rows shaped like existing ones (same user and event), at new ids and times."""
    with engine.begin() as conn:
        cols = list(conn.execute(sa.text("select * from credit_histories where 1 = 0")).keys())
        for old, new, at in zip(ids, new_ids, stamps, strict=True):
            row = dict(
                conn.execute(sa.text("select * from credit_histories where id = :i"), {"i": old})
                .mappings()
                .one()
            )
            row |= {"id": new, "created_at": at, "updated_at": at}
            conn.execute(
                sa.text(
                    f"insert into credit_histories ({', '.join(cols)}) values "
                    f"({', '.join(':' + c for c in cols)})"
                ),
                {c: row[c] for c in cols},
            )


def _last_rows_of_users(engine: sa.Engine, users: int) -> tuple[list[int], int]:
    """The last ledger id of each of the first `users` users, and the ledger's highest id."""
    with engine.connect() as conn:
        last = [
            r[0]
            for r in conn.execute(
                sa.text("select max(id) from credit_histories group by user_id order by user_id")
            ).fetchall()
        ][:users]
        top = conn.execute(sa.text("select max(id) from credit_histories")).scalar()
    return last, top


def _first_full_run(tmp_path: Path, url: str) -> tuple[sa.Engine, Path, dt.datetime]:
    """A demo source up to yesterday and its first full run (yesterday still empty at its cut)."""
    from credits_pipeline.source.demo import generate

    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    midnight = dt.datetime.combine(today, dt.time())
    generate(url, users=E2E_USERS, seed=5, months=E2E_MONTHS, anomalies=False, end=yesterday)
    daily = tmp_path / "daily"
    _cli(daily, url, midnight - dt.timedelta(hours=20))
    return sa.create_engine(url), daily, midnight


def _a_late_row_reaches_the_partition_run_which_equals_a_full_rebuild(
    tmp_path: Path, url: str
) -> None:
    """Yesterday's activity, with a row written late for the day before yesterday among its ids:
    the schedule's partition run for yesterday finds it by id, and equals a rebuild."""
    engine, daily, midnight = _first_full_run(tmp_path, url)
    yesterday = midnight.date() - dt.timedelta(days=1)
    last, top = _last_rows_of_users(engine, 6)
    two_days_ago = midnight - dt.timedelta(days=2)
    stamps = [midnight - dt.timedelta(hours=20 - k) for k in range(6)]
    stamps[3] = two_days_ago + dt.timedelta(hours=15)  # the late row: id top+4
    _copy_rows(engine, last, [top + 1 + k for k in range(6)], stamps)
    engine.dispose()
    cutoff = midnight + dt.timedelta(hours=3)
    _cli(daily, url, cutoff, "--partition", yesterday.isoformat())
    late = duckdb.connect(str(daily / "warehouse.duckdb"), read_only=True)
    try:
        assert late.execute(
            "select count(*) from credits.credit_histories where credit_history_id = ?", [top + 4]
        ).fetchone() == (1,)
        # found by id above the high-water mark: no full check beyond the first run's
        assert late.execute("select count(*) from raw._ledger_full_checks").fetchone() == (1,)
    finally:
        late.close()
    assert (
        _differences_from_a_full_rebuild(tmp_path, daily, url, cutoff, "full_after_late_row") == []
    )


def _old_rows_rewritten_and_deleted_reach_the_partition_run_which_equals_a_full_rebuild(
    tmp_path: Path, url: str
) -> None:
    """In days closed runs ago, an old row rewritten in place and another one deleted: one
    partition run takes both (the replay replays the changed users again), and equals a rebuild."""
    engine, daily, midnight = _first_full_run(tmp_path, url)
    yesterday = midnight.date() - dt.timedelta(days=1)
    window = {"a": midnight - dt.timedelta(days=5), "b": midnight - dt.timedelta(days=3)}
    with engine.begin() as conn:
        rewritten, deleted = conn.execute(
            sa.text(
                "select min(id), max(id) from credit_histories where created_at >= :a and "
                "created_at < :b"
            ),
            window,
        ).one()
        assert rewritten != deleted
        conn.execute(
            sa.text("update credit_histories set amount = amount + 7 where id = :i"),
            {"i": rewritten},
        )
        conn.execute(sa.text("delete from credit_histories where id = :i"), {"i": deleted})
        new_amount = conn.execute(
            sa.text("select amount from credit_histories where id = :i"), {"i": rewritten}
        ).scalar()
    engine.dispose()
    cutoff = midnight + dt.timedelta(hours=4)
    # an ordinary day whose re-checked closed days reach the edits (by default only the last two
    # are, and older edits wait for the weekly full check): the lost row turns it into a full one
    recheck = {settings.LEDGER_RECHECK_DAYS_VAR: "7"}
    _cli(daily, url, cutoff, "--partition", yesterday.isoformat(), env=recheck)
    daily_ledger = duckdb.connect(str(daily / "warehouse.duckdb"), read_only=True)
    try:  # both edits reached the warehouse (the rebuild below compares every report and mart)
        assert daily_ledger.execute(
            "select count(*) from credits.credit_histories where credit_history_id = ?", [deleted]
        ).fetchone() == (0,)
        assert daily_ledger.execute(
            "select amount from raw.credit_histories where id = ?", [rewritten]
        ).fetchone() == (new_amount,)
        # the first run's full check, then the one the deleted row asked for
        assert daily_ledger.execute("select count(*) from raw._ledger_full_checks").fetchone() == (
            2,
        )
    finally:
        daily_ledger.close()
    assert _differences_from_a_full_rebuild(tmp_path, daily, url, cutoff, "full_after_edits") == []


# Each server carries one of the two scenarios through whole CLI runs (five runs for both on each
# server took 6.5 minutes of CI per server); the extraction-level tests above run both scenarios
# on all three dialects.
@pytest.mark.mysql
def test_a_partition_run_after_a_late_row_equals_a_full_rebuild_on_mariadb(
    tmp_path, fresh_mysql_url
):
    _a_late_row_reaches_the_partition_run_which_equals_a_full_rebuild(tmp_path, fresh_mysql_url)


@pytest.mark.postgres
def test_a_partition_run_after_old_rows_were_rewritten_and_deleted_equals_a_rebuild_on_postgres(
    tmp_path, fresh_postgres_url
):
    _old_rows_rewritten_and_deleted_reach_the_partition_run_which_equals_a_full_rebuild(
        tmp_path, fresh_postgres_url
    )


def test_a_plain_materialize_on_a_kept_warehouse_loads_only_the_days_it_lacks(
    tmp_path, fresh_sqlite_url
):
    """The catch-up (extract/catch_up.py): missed days and the newest one, equal to a rebuild."""
    from credits_pipeline.source.demo import generate

    url = fresh_sqlite_url
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    midnight = dt.datetime.combine(today, dt.time())
    first_key = (today - dt.timedelta(days=E2E_PARTITION_DAYS)).isoformat()
    generate(url, users=E2E_USERS, seed=7, months=E2E_MONTHS, anomalies=False, end=yesterday)
    daily = tmp_path / "daily"
    out = _cli(daily, url, midnight - dt.timedelta(hours=20))
    assert f"ledger partitions {first_key} .. {yesterday} (catch-up" in out  # empty: every day

    # three scheduled runs were missed: their days are not loaded, and yesterday got new rows
    missed_from = yesterday - dt.timedelta(days=2)
    con = duckdb.connect(str(daily / "warehouse.duckdb"))
    try:
        con.execute("delete from raw._ledger_partitions where partition_date >= ?", [missed_from])
    finally:
        con.close()
    engine = sa.create_engine(url)
    last, top = _last_rows_of_users(engine, 4)
    stamps = [midnight - dt.timedelta(hours=10 - k) for k in range(4)]
    _copy_rows(engine, last, [top + 1 + k for k in range(4)], stamps)
    engine.dispose()
    cutoff = midnight + dt.timedelta(hours=3)
    out = _cli(daily, url, cutoff)
    assert f"ledger partitions {missed_from} .. {yesterday} (catch-up" in out
    assert _differences_from_a_full_rebuild(tmp_path, daily, url, cutoff, "full_catch_up") == []

    # kept up to date: the next plain run takes the newest closed day only (the window the CLI
    # computes from what this warehouse holds; one more whole run would only print it)
    keys = [
        (yesterday - dt.timedelta(days=back)).isoformat()
        for back in range(E2E_PARTITION_DAYS - 1, -1, -1)
    ]
    assert keys[0] == first_key
    con = duckdb.connect(str(daily / "warehouse.duckdb"))
    try:
        loaded = loaded_ledger_partitions(con)
    finally:
        con.close()
    assert catch_up_window(keys, loaded) == (yesterday.isoformat(), yesterday.isoformat())


# -- BigQuery: the same folds and fingerprints as on DuckDB ------------------------------------


@pytest.mark.bigquery
def test_late_rewritten_and_deleted_rows_land_on_bigquery_exactly_as_on_duckdb(
    bigquery_emulator,
    instance,
    tmp_path,
):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from credits_pipeline.extract.assets import extraction_assets, source_table_specs
    from credits_pipeline.source.resource import SourceDatabase
    from credits_pipeline_tests.bigquery_emulator import emulator_warehouse
    from credits_pipeline_tests.harness import warehouse_fingerprint

    bigquery = emulator_warehouse(bigquery_emulator)
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    engine = write_source(url, [*_days_ledger(), ledger_row(30, 1, 1, 500, 0, ts(-9, 1))])
    duck = str(tmp_path / "warehouse.duckdb")

    def both(first: str, last: str) -> None:
        assert run_extraction(instance, url, duck, first=first, last=last).success
        defs = dg.Definitions(
            assets=[*source_table_specs, *extraction_assets],
            resources={"source": SourceDatabase(url=url), "warehouse": bigquery},
            executor=dg.in_process_executor,
        )
        tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, tags=tags, raise_on_error=False
        )
        assert result.success
        expected = warehouse_fingerprint(duck)
        with bigquery.connect(read_only=True) as con:
            for name in ("credit_histories", "credit_histories__open", "_ledger_fingerprints"):
                assert (
                    sorted(map(repr, con.execute(f"select * from raw.{name}").fetchall()))
                    == expected[name]
                ), name

    both("2025-01-01", "2025-01-05")
    with engine.begin() as conn:
        conn.execute(
            sa.text(_insert_sql()),
            [ledger_row(16, 1, 2, 15, 485, ts(5, 1)), ledger_row(17, 2, 2, 15, 485, ts(3, 9))],
        )
    both("2025-01-06", "2025-01-06")
    with engine.begin() as conn:
        conn.execute(sa.text("update credit_histories set amount = 99 where id = 5"))
        conn.execute(sa.text("delete from credit_histories where id = 8"))
    both("2025-01-06", "2025-01-06")


# -- the catch-up's partition selection (extract/catch_up.py) ----------------------------------

KEYS = [f"2025-01-0{i}" for i in range(1, 8)]


def test_a_catch_up_loads_only_missing_partitions_as_contiguous_ranges():
    from credits_pipeline.extract.catch_up import catch_up_ranges

    loaded = [D(2025, 1, d) for d in (1, 2, 3, 5)]
    assert catch_up_ranges(KEYS, loaded) == [
        ("2025-01-04", "2025-01-04"),
        ("2025-01-06", "2025-01-07"),
    ]
    assert catch_up_ranges(KEYS, [D(2025, 1, d) for d in range(1, 8)]) == []
    assert catch_up_ranges(KEYS, [], full_refresh=False) == [("2025-01-01", "2025-01-07")]


def test_a_catch_up_runs_one_window_from_the_first_missing_day_or_the_newest_day_alone():
    from credits_pipeline.extract.catch_up import catch_up_window

    assert catch_up_window([], []) is None
    assert catch_up_window(KEYS, []) == ("2025-01-01", "2025-01-07")
    gaps = [D(2025, 1, d) for d in (1, 2, 3, 5)]
    assert catch_up_window(KEYS, gaps) == ("2025-01-04", "2025-01-07")
    everything = [D(2025, 1, d) for d in range(1, 8)]
    assert catch_up_window(KEYS, everything) == ("2025-01-07", "2025-01-07")
    assert catch_up_window(KEYS, everything, full_refresh=True) == ("2025-01-01", "2025-01-07")


def test_a_catch_up_reloads_days_whose_fingerprint_changed_and_a_full_refresh_takes_everything():
    from credits_pipeline.extract.catch_up import catch_up_ranges, changed_days

    everything = [D(2025, 1, d) for d in range(1, 8)]
    stored = {
        D(2025, 1, 2): StoredFingerprint(9, fp(2, 3)),
        D(2025, 1, 3): StoredFingerprint(9, fp(1, 5)),
    }
    source = {D(2025, 1, 2): {9: fp(2, 3)}, D(2025, 1, 3): {9: fp(1, 6)}}
    changed = changed_days(stored, source, everything)
    assert changed == {D(2025, 1, 3)}
    assert catch_up_ranges(KEYS, everything, changed) == [("2025-01-03", "2025-01-03")]
    assert catch_up_ranges(KEYS, everything, full_refresh=True) == [("2025-01-01", "2025-01-07")]


def test_each_ledger_partition_of_a_ranged_run_records_its_own_row_counts(
    instance, warehouse, sqlite_url
):
    ledger = clean_ledger()
    ledger[1]["meta"] = "{broken"  # id 2, Jan 2: quarantined
    write_source(sqlite_url, ledger)
    result = run_extraction(instance, sqlite_url, warehouse)
    assert result.success
    counts = {
        m.partition: (m.metadata["dagster/row_count"].value, m.metadata["rows_quarantined"].value)
        for m in result.asset_materializations_for_node("raw__credit_histories")
    }
    assert counts == {
        "2025-01-01": (1, 0),
        "2025-01-02": (1, 1),
        "2025-01-03": (1, 0),
        "2025-01-04": (0, 0),
        "2025-01-05": (0, 0),
    }


def test_days_at_a_bound_the_cut_did_not_compute_are_read_again_not_reported_changed():
    from credits_pipeline.extract.fingerprint import MAX_FINGERPRINT_BOUNDS, fingerprint_bounds

    stored = {
        D(2025, 1, 1) + dt.timedelta(days=i): StoredFingerprint(100 + i, fp(1, i))
        for i in range(10)
    }
    stored[D(2025, 1, 20)] = StoredFingerprint(100, fp(1, 0))
    bounds = fingerprint_bounds(stored, D(2025, 2, 1), 500)
    assert len(bounds) == MAX_FINGERPRINT_BOUNDS and 500 in bounds and 100 in bounds
    source = {d: {b: s.fingerprint for b in bounds} for d, s in stored.items()}
    plan = plan_closed_days(stored, source, D(2025, 2, 1), 500)
    assert plan.changed == ()
    assert len(plan.first_read) == 11 - (MAX_FINGERPRINT_BOUNDS - 1) - 1
