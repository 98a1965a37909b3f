"""Schema drift: a source older than the contract loads, warns, and reconciles exactly.

The application's own schema dump predates `users.subscription_provider`,
`subscriptions.cycle_anchor_at` and `facelesses.genre_name` (then called `genre`). A source of that
age must load every table — the absent optional columns as NULL, each named by a WARN
`source_schema_drift` check — and reconcile exactly as the same data with the full schema does.
A missing *required* column fails its own table's asset only.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.source import drift
from credits_pipeline.source.drift import SCHEMA_DRIFT_CHECK, compare, select_items
from credits_pipeline.source.tables import (
    CREDIT_HISTORIES,
    FACELESSES,
    SUBSCRIPTIONS,
    TABLES,
    USERS,
)
from credits_pipeline_tests.cli_run import materialize, warehouse_rows
from credits_pipeline_tests.harness import (
    check_results,
    query,
    run_extraction,
    step_failure_messages,
    write_source,
)

# The older real schema: (table, column it lacks, column it has instead or None).
OLDER_SCHEMA = (
    ("users", "subscription_provider", None),
    ("subscriptions", "cycle_anchor_at", None),
    ("facelesses", "genre_name", "genre"),
)


@pytest.fixture(autouse=True)
def _forget_drift():
    """Inspections are recorded per process: start and end every test without a previous one's."""
    drift._LAST_DRIFT.clear()
    yield
    drift._LAST_DRIFT.clear()


def _make_older(path) -> None:
    with sqlite3.connect(path) as db:
        for table, column, renamed in OLDER_SCHEMA:
            if renamed:
                db.execute(f"alter table {table} rename column {column} to {renamed}")
            else:
                db.execute(f"alter table {table} drop column {column}")


def test_every_column_the_reconciliation_reads_is_required_and_the_older_schemas_are_optional():
    from credits_pipeline.ledger import rules

    for table in TABLES:
        assert table.column("id").required
        if table.strategy == "merge":
            assert table.column("updated_at").required, f"{table.name}: merges read by updated_at"
    for relation, columns in rules.INPUT_RELATIONS.items():
        renamed = {rules.LEDGER_ROWS: CREDIT_HISTORIES.name, rules.EVENTS: "credit_events"}
        table = next((t for t in TABLES if t.name == renamed.get(relation, relation)), None)
        for column in columns if table is not None else ():
            if column in {c.name for c in table.columns}:
                assert table.column(column).required, f"{table.name}.{column} is read by the rules"
    for table, column, _ in OLDER_SCHEMA:
        assert not next(t for t in TABLES if t.name == table).column(column).required


def test_drift_splits_missing_columns_into_required_and_optional():
    present = [
        c.name
        for c in USERS.extracted_columns
        if c.name not in ("subscription_provider", "extra_credits")
    ]
    found = compare(USERS, [p.upper() for p in present])  # names compare case-insensitively
    assert found.missing_optional == ("subscription_provider",)
    assert found.missing_required == ("extra_credits",)


@pytest.mark.parametrize(
    "dialect, expected",
    [
        ("sqlite", 'NULL AS "genre_name"'),
        ("mysql", 'CAST(NULL AS CHAR) AS "genre_name"'),
        ("postgresql", 'CAST(NULL AS TEXT) AS "genre_name"'),
    ],
)
def test_an_absent_optional_column_is_selected_as_a_typed_null(dialect, expected):
    drift.record(
        compare(
            FACELESSES, [c.name for c in FACELESSES.extracted_columns if c.name != "genre_name"]
        )
    )
    items = select_items(FACELESSES, lambda name: f'"{name}"', dialect)
    assert expected in items and '"video_id"' in items
    assert len(items) == len(FACELESSES.extracted_columns)


# -- through the real extraction assets ------------------------------------------------------------


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def test_an_absent_optional_column_loads_as_null_with_a_warn_check_naming_table_and_column(
    instance, tmp_path
):
    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    warehouse = str(tmp_path / "warehouse.duckdb")
    write_source(url)
    _make_older(tmp_path / "src.sqlite")
    result = run_extraction(instance, url, warehouse)
    assert result.success, step_failure_messages(result)
    checks = check_results(result)
    for table, column, _ in OLDER_SCHEMA:
        check = checks[(f"raw/{table}", SCHEMA_DRIFT_CHECK)]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.description.startswith(
            f"syllaby_v2.{table}: column {column} is missing from the source"
        )
    assert checks[("raw/credit_events", SCHEMA_DRIFT_CHECK)].passed
    assert query(warehouse, "select count(*), count(subscription_provider) from raw.users") == [
        (2, 0)
    ]


def test_a_missing_required_column_fails_its_table_only_with_one_message(instance, tmp_path):
    url = f"sqlite:///{tmp_path / 'src.sqlite'}"
    warehouse = str(tmp_path / "warehouse.duckdb")
    engine = write_source(url)
    with engine.begin() as conn:
        conn.execute(sa.text("alter table videos drop column status"))
    result = run_extraction(instance, url, warehouse)
    [message] = step_failure_messages(result)
    assert message.startswith("syllaby_v2.videos: column status is missing from the source table")
    assert query(warehouse, "select count(*) from raw.users") == [(2,)]  # the other inputs loaded
    assert query(warehouse, "select count(*) from raw.credit_histories") == [(4,)]


# -- end to end: the older schema reconciles exactly as the full one -------------------------------


RECONCILIATION_SQL = "select * from marts.user_balance_reconciliation order by user_id"
ANOMALIES_SQL = (
    "select rule, user_id, credit_history_id, entity_type, entity_id, expected, actual, detail "
    "from marts.ledger_anomalies order by all"
)


def test_the_older_real_schema_materializes_with_warn_checks_and_an_exact_reconciliation(
    tmp_path,
):
    from credits_pipeline.source.demo import generate

    full = tmp_path / "full.sqlite"
    generate(f"sqlite:///{full}", users=60, seed=9, months=6, anomalies=True)
    older = tmp_path / "older.sqlite"
    shutil.copy(full, older)
    _make_older(older)

    (tmp_path / "full").mkdir()
    (tmp_path / "older").mkdir()
    cutoff = {
        settings.CUTOFF_AT_VAR: dt.datetime.now(dt.UTC)
        .replace(microsecond=0, tzinfo=None)
        .isoformat()
    }
    runs = {
        name: materialize(tmp_path / name, f"sqlite:///{tmp_path / f'{name}.sqlite'}", **cutoff)
        for name in ("full", "older")
    }
    for name, run in runs.items():
        assert run.returncode == 0, name + run.stdout[-3000:] + run.stderr[-3000:]
    for table, _, _ in OLDER_SCHEMA:
        failed_check = re.escape(f"raw/{table}:{SCHEMA_DRIFT_CHECK}")
        assert re.search(failed_check + r"\W+WARN\b", runs["older"].stdout), runs["older"].stdout
        assert f"raw/{table}:{SCHEMA_DRIFT_CHECK}" not in runs["full"].stdout

    def rows(name: str, sql: str) -> list[tuple]:
        return warehouse_rows(tmp_path / name / "warehouse.duckdb", sql)

    assert rows("older", RECONCILIATION_SQL) == rows("full", RECONCILIATION_SQL)
    assert (
        len(rows("full", RECONCILIATION_SQL))
        == rows("full", "select count(*) from raw.users")[0][0]
        > 50
    )
    assert rows("older", ANOMALIES_SQL) == rows("full", ANOMALIES_SQL)
    assert rows("older", "select count(*) from raw.facelesses where genre_name is not null") == [
        (0,)
    ]
    assert rows(
        "older", "select count(*) from raw.subscriptions where cycle_anchor_at is not null"
    ) == [(0,)]
    assert rows("full", "select count(*) from raw.facelesses") == rows(
        "older", "select count(*) from raw.facelesses"
    )
    assert SUBSCRIPTIONS.column("cycle_anchor_at").required is False


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_the_fast_reader_reads_an_absent_optional_column_as_a_typed_null_without_falling_back(
    server, request
):
    import pyarrow as pa

    from credits_pipeline.source import fast_reader
    from credits_pipeline.source.reader import check_table
    from credits_pipeline.validation.quarantine import validate_batch

    url = request.getfixturevalue(f"fresh_{server}_url")
    engine = write_source(url)
    with engine.begin() as conn:
        conn.execute(sa.text("alter table credit_histories drop column label"))
    with engine.connect() as conn:
        check_table(conn, CREDIT_HISTORIES)
    engine.dispose()
    fallbacks: list[str] = []
    batches = list(fast_reader.read_batches(url, CREDIT_HISTORIES, on_fallback=fallbacks.append))
    assert fallbacks == []
    assert all(isinstance(b, pa.Table) for b in batches)
    table = pa.concat_tables(batches)
    assert table.num_rows == 5 and table.column("label").null_count == 5
    validated = validate_batch(CREDIT_HISTORIES.name, table)
    assert validated.clean.num_rows == 5 and len(validated.rejected) == 0
