"""One table of column types, from which every engine's map derives (issue 12).

The table in `credits_pipeline/source/column_types.py` is complete (every kind the contract may use
has a type in every engine), its engines agree with each other where one hands the other a batch,
and the maps the modules kept (`DUCKDB_TYPES`, `BIGQUERY_TYPES`, both `ARROW_TYPES`, `POLARS_TYPES`,
the source's DDL and typed NULLs, the ledger fixtures' columns) say what they said when each was
written out by hand. The hand-written maps are copied below once, as the behaviour they replaced.
"""

from __future__ import annotations

import dataclasses

import duckdb
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from credits_pipeline.ledger import fixtures
from credits_pipeline.source import drift
from credits_pipeline.source.column_types import COLUMN_TYPES, KINDS, ColumnType
from credits_pipeline.source.schema import build_metadata
from credits_pipeline.source.tables import TABLES, Column
from credits_pipeline.validation import typed
from credits_pipeline.warehouse import bigquery_ledger_layout, bigquery_raw_tables, raw_tables

# -- the hand-written maps, as they stood before the table (commit 11e179a) ----------------------

OLD_DUCKDB_TYPES = {
    "id": "BIGINT",
    "int": "BIGINT",
    "float": "DOUBLE",
    "str": "VARCHAR",
    "ts": "TIMESTAMP",
    "json": "VARCHAR",
    "bool": "BOOLEAN",
}
OLD_BIGQUERY_TYPES = {
    "id": "INT64",
    "int": "INT64",
    "float": "FLOAT64",
    "str": "STRING",
    "ts": "TIMESTAMP",
    "json": "STRING",
    "bool": "BOOL",
}
OLD_BIGQUERY_ARROW_TYPES = {
    "id": pa.int64(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "ts": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
    "bool": pa.bool_(),
}
OLD_VALIDATED_ARROW_TYPES = {
    "id": pa.int64(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.large_string(),
    "json": pa.large_string(),
    "ts": pa.timestamp("us"),
    "bool": pa.bool_(),
}
OLD_POLARS_TYPES = {
    "id": pl.Int64(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "json": pl.String(),
    "ts": pl.Datetime("us"),
    "bool": pl.Boolean(),
}
OLD_NULL_TYPES = {
    "mysql": {
        "id": "SIGNED",
        "int": "SIGNED",
        "float": "DOUBLE",
        "str": "CHAR",
        "ts": "DATETIME",
        "json": "CHAR",
        "bool": "SIGNED",
    },
    "postgresql": {
        "id": "BIGINT",
        "int": "BIGINT",
        "float": "DOUBLE PRECISION",
        "str": "TEXT",
        "ts": "TIMESTAMP",
        "json": "TEXT",
        "bool": "BOOLEAN",
    },
}
OLD_SOURCE_TYPES = {
    "id": lambda c: sa.BigInteger(),
    "int": lambda c: sa.BigInteger(),
    "float": lambda c: sa.Float(precision=53).with_variant(mysql.DOUBLE(), "mysql", "mariadb"),
    "str": lambda c: sa.String(c.length),
    "ts": lambda c: sa.DateTime(timezone=False).with_variant(mysql.TIMESTAMP(), "mysql", "mariadb"),
    "json": lambda c: sa.Text().with_variant(mysql.JSON(), "mysql", "mariadb"),
    "bool": lambda c: sa.SmallInteger(),
}
OLD_FIXTURE_TYPES = {
    "ledger_rows": {
        "id": "bigint",
        "user_id": "bigint",
        "credit_events_id": "bigint",
        "creditable_type": "varchar",
        "creditable_id": "bigint",
        "calculative_index": "bigint",
        "amount": "bigint",
        "previous_amount": "double",
        "event_type": "integer",
        "created_at": "timestamp",
        "updated_at": "timestamp",
    },
    "events": {
        "id": "bigint",
        "name": "varchar",
        "type": "integer",
        "calculation_type": "varchar",
        "value": "double",
        "min_amount": "double",
    },
    "users": {"id": "bigint", "remaining_credit_amount": "bigint", "extra_credits": "bigint"},
    "facelesses": {"id": "bigint", "user_id": "bigint", "video_id": "bigint"},
    "videos": {"id": "bigint", "user_id": "bigint", "type": "varchar", "status": "varchar"},
    "real_clones": {"id": "bigint", "user_id": "bigint", "status": "varchar"},
    "speeches": {"id": "bigint", "user_id": "bigint", "status": "varchar"},
    "quarantined_users": {"id": "bigint", "reason": "varchar"},
}
# The two fixture columns the hand-written map typed INTEGER although the warehouse hands the rules
# the contract's BIGINT (`raw.credit_events.type`, and `event_type` through the dbt ledger view):
# deriving from the contract makes the fixtures say what production says.
FIXTURE_TYPES_NOW_AS_IN_THE_WAREHOUSE = {("ledger_rows", "event_type"), ("events", "type")}

DIALECTS = {
    "mysql": mysql.dialect(),
    "postgresql": postgresql.dialect(),
    "sqlite": sqlite.dialect(),
}


# -- the table is complete ------------------------------------------------------------------------


def test_every_kind_of_the_contract_has_one_entry_in_the_table():
    assert sorted(COLUMN_TYPES) == sorted(KINDS)


def test_every_kind_the_catalog_uses_has_a_type_in_every_engine():
    used = {c.kind for t in TABLES for c in t.columns}
    assert used <= set(COLUMN_TYPES), sorted(used - set(COLUMN_TYPES))


@pytest.mark.parametrize("kind", KINDS)
def test_no_engine_type_of_a_kind_is_left_empty(kind):
    entry = COLUMN_TYPES[kind]
    empty = [f.name for f in dataclasses.fields(ColumnType) if getattr(entry, f.name) in (None, "")]
    assert empty == [], f"{kind} has no type for {empty}"


def test_an_entry_cannot_be_written_without_a_type_for_every_engine():
    with pytest.raises(TypeError):
        ColumnType(duckdb="BIGINT", bigquery="INT64")  # type: ignore[call-arg]


# -- the engines agree where one hands another a batch -------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_duckdb_reads_a_validated_arrow_column_at_the_kinds_duckdb_type(kind):
    entry = COLUMN_TYPES[kind]
    batch = pa.table({"v": pa.array([None], entry.arrow)})
    con = duckdb.connect()
    try:
        con.register("batch", batch)
        described = con.execute("describe select v from batch").fetchone()
    finally:
        con.close()
    assert described is not None and described[1] == entry.duckdb, (kind, described)


@pytest.mark.parametrize("kind", KINDS)
def test_polars_reads_a_validated_arrow_column_at_the_kinds_polars_type(kind):
    entry = COLUMN_TYPES[kind]
    assert pl.from_arrow(pa.table({"v": pa.array([None], entry.arrow)}))["v"].dtype == entry.polars


@pytest.mark.parametrize("kind", KINDS)
def test_a_load_job_column_differs_from_a_validated_one_only_in_text_width_and_time_zone(kind):
    entry = COLUMN_TYPES[kind]
    empty = pa.array([], entry.arrow)
    if pa.types.is_timestamp(entry.arrow):
        assert entry.arrow_bigquery == pa.timestamp(entry.arrow.unit, tz="UTC")
    else:
        assert empty.cast(entry.arrow_bigquery).cast(entry.arrow).type == entry.arrow


# -- the maps the modules kept say what they said -------------------------------------------------


def test_the_warehouse_maps_are_the_hand_written_ones():
    assert raw_tables.DUCKDB_TYPES == OLD_DUCKDB_TYPES
    assert bigquery_ledger_layout.BIGQUERY_TYPES == OLD_BIGQUERY_TYPES
    assert bigquery_raw_tables.ARROW_TYPES == OLD_BIGQUERY_ARROW_TYPES


def test_the_validation_maps_are_the_hand_written_ones():
    assert typed.ARROW_TYPES == OLD_VALIDATED_ARROW_TYPES
    assert typed.POLARS_TYPES == OLD_POLARS_TYPES


def test_the_typed_nulls_of_a_drifted_source_are_the_hand_written_ones():
    assert drift._NULL_TYPES == OLD_NULL_TYPES


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_the_source_ddl_compiles_to_the_hand_written_types_on_every_dialect(dialect):
    compiled = DIALECTS[dialect]
    tables = build_metadata().tables
    for table in TABLES:
        for column in table.columns:
            now = tables[table.name].c[column.name].type.compile(dialect=compiled)
            before = OLD_SOURCE_TYPES[column.kind](column).compile(dialect=compiled)
            assert now == before, (dialect, table.name, column.name)


def test_the_source_types_of_one_length_follow_the_columns_declared_length():
    column = Column("provider", "str", length=40)
    assert COLUMN_TYPES["str"].source(column.length).compile(dialect=DIALECTS["mysql"]) == (
        "VARCHAR(40)"
    )


def test_the_ledger_fixtures_have_the_hand_written_columns_at_the_warehouses_types():
    derived = {
        relation: {column: t.lower() for column, t in columns.items()}
        for relation, columns in fixtures._TYPES.items()
    }
    expected = {
        relation: {
            column: "bigint" if (relation, column) in FIXTURE_TYPES_NOW_AS_IN_THE_WAREHOUSE else t
            for column, t in columns.items()
        }
        for relation, columns in OLD_FIXTURE_TYPES.items()
    }
    assert derived == expected
    assert {r: list(c) for r, c in fixtures._TYPES.items()} == {
        r: list(c) for r, c in OLD_FIXTURE_TYPES.items()
    }, "the insert order of the fixture columns changed"
