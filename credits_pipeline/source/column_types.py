"""Each contract column kind's type in every engine, written down once.

A column of the contract (`source/tables.py`) has a logical `kind` — `id`, `int`, `float`, `str`,
`ts`, `json`, `bool` — and travels through six type systems on its way to a report: the source's
DDL (SQLAlchemy, for the demo and test databases), the typed NULL the SELECT names for a column an
older source lacks, the Arrow batch the fast reader validates in polars, DuckDB's and BigQuery's
raw tables, and the Arrow table a BigQuery load job takes. Those types used to be seven maps in
six modules, each saying the same thing about each kind; a new kind (or a changed one) had to be
found in all of them. Here each kind is one `ColumnType` row, and every module's map
(`DUCKDB_TYPES`, `BIGQUERY_TYPES`, both `ARROW_TYPES`, `POLARS_TYPES`, the source's DDL and typed
NULLs, the ledger fixtures' columns) is a view of this table.

It lives in `source/`, beside the contract whose kinds it types, because every room that needs it
(validation, warehouse, extract, ledger) already reads the source room; it imports only the
contract's kinds and the libraries whose types it names — no engine client: DuckDB's and BigQuery's
types are their DDL spellings — so no room gains an import it was not allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from credits_pipeline.source.tables import ColumnKind

SourceType = Callable[[int], sa.types.TypeEngine[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class ColumnType:
    """One kind's type in each engine that holds it.

    Timestamps are UTC everywhere with microsecond precision: naive in DuckDB and in the validated
    Arrow batches (DuckDB's TIMESTAMP), UTC-aware in a BigQuery load job (BigQuery's TIMESTAMP is
    an instant, and a naive Arrow timestamp would load as DATETIME). Text is `large_string` in a
    validated batch (what polars hands back) and `string` in a load job.
    """

    duckdb: str  # DuckDB DDL: `raw.*` tables, the ledger fixtures
    bigquery: str  # BigQuery DDL and load-job schema
    arrow: pa.DataType  # a validated batch's clean rows (what DuckDB's staging receives)
    arrow_bigquery: pa.DataType  # the Arrow table of a BigQuery load job
    polars: pl.DataType  # what the pandera polars schema checks
    # The source's DDL (demo and test databases), given the column's declared length. MySQL's
    # unsigned ids have no PostgreSQL/SQLite counterpart, so ids are BIGINT everywhere.
    source: SourceType
    # The typed NULL the SELECT names for a column the source lacks (`source/drift.py`): connectorx
    # types its Arrow columns from the result's metadata, and a bare NULL has none.
    mysql_cast: str
    postgresql_cast: str


_BIGINT = ColumnType(
    duckdb="BIGINT",
    bigquery="INT64",
    arrow=pa.int64(),
    arrow_bigquery=pa.int64(),
    polars=pl.Int64(),
    source=lambda length: sa.BigInteger(),
    mysql_cast="SIGNED",
    postgresql_cast="BIGINT",
)

COLUMN_TYPES: dict[ColumnKind, ColumnType] = {
    "id": _BIGINT,
    "int": _BIGINT,
    "float": ColumnType(
        duckdb="DOUBLE",
        bigquery="FLOAT64",
        arrow=pa.float64(),
        arrow_bigquery=pa.float64(),
        polars=pl.Float64(),
        source=lambda length: sa.Float(precision=53).with_variant(
            mysql.DOUBLE(), "mysql", "mariadb"
        ),
        mysql_cast="DOUBLE",
        postgresql_cast="DOUBLE PRECISION",
    ),
    "str": ColumnType(
        duckdb="VARCHAR",
        bigquery="STRING",
        arrow=pa.large_string(),
        arrow_bigquery=pa.string(),
        polars=pl.String(),
        source=lambda length: sa.String(length),
        mysql_cast="CHAR",
        postgresql_cast="TEXT",
    ),
    "ts": ColumnType(
        duckdb="TIMESTAMP",
        bigquery="TIMESTAMP",
        arrow=pa.timestamp("us"),
        arrow_bigquery=pa.timestamp("us", tz="UTC"),
        polars=pl.Datetime("us"),
        # MySQL TIMESTAMP cannot go past 2038 and converts with the session time zone; DATETIME
        # does neither, and the pipeline reads both the same way (UTC).
        source=lambda length: sa.DateTime(timezone=False).with_variant(
            mysql.TIMESTAMP(), "mysql", "mariadb"
        ),
        mysql_cast="DATETIME",
        postgresql_cast="TIMESTAMP",
    ),
    "json": ColumnType(
        duckdb="VARCHAR",
        bigquery="STRING",
        arrow=pa.large_string(),
        arrow_bigquery=pa.string(),
        polars=pl.String(),
        source=lambda length: sa.Text().with_variant(mysql.JSON(), "mysql", "mariadb"),
        mysql_cast="CHAR",
        postgresql_cast="TEXT",
    ),
    "bool": ColumnType(
        duckdb="BOOLEAN",
        bigquery="BOOL",
        arrow=pa.bool_(),
        arrow_bigquery=pa.bool_(),
        polars=pl.Boolean(),
        # MySQL's TINYINT(1): a small integer at the source, a boolean once validated
        source=lambda length: sa.SmallInteger(),
        mysql_cast="SIGNED",
        postgresql_cast="BOOLEAN",
    ),
}

KINDS: tuple[ColumnKind, ...] = get_args(ColumnKind)


def types_by_kind(engine: Callable[[ColumnType], T]) -> dict[str, T]:
    """One engine's map, kind -> type, read off the table (`types_by_kind(lambda t: t.duckdb)`).

    Why: the modules that predate this table look types up in a plain dict by kind; deriving those
    dicts here keeps their names and their callers while the table stays the only statement.
    """
    return {kind: engine(column_type) for kind, column_type in COLUMN_TYPES.items()}
