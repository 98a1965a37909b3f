"""Validating typed Arrow batches (the fast read path) with the same quarantine rules, in polars.

The SQLAlchemy reader hands over object columns, which pandera-on-pandas must coerce value by value:
about a second per 100,000 ledger rows, so validation alone would dominate a multi-million-row
extraction. The fast reader (connectorx) already delivers typed Arrow columns, so here the batch is
conformed to the warehouse's types with vectorised casts (a value that cannot be cast is a coercion
failure, quarantined with the same reason text as on the pandas path) and then checked by a pandera
*polars* schema derived from the pandas models in `models.py` — the same nullability, the same
domain checks with the same names, the same `valid_json` — so one model stays the single statement
of what a row must be. The split is the one `quarantine.validate_batch` makes: rows the warehouse
cannot represent are rejected with a reason, domain oddities are counted and loaded, and the first
row of a duplicated id is kept. Clean rows stay Arrow, for `Stager.append_arrow`.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter

import duckdb
import pandas as pd
import pandera.polars as pap
import polars as pl
import pyarrow as pa
from pandera.api.polars.types import PolarsData

from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import TABLES_BY_NAME, Table
from credits_pipeline.validation.models import MODELS
from credits_pipeline.validation.outcome import (
    FAILED_COLUMN,
    REASON_COLUMN,
    ValidatedBatch,
    describe_failure,
    empty_rejected,
    is_quarantine_check,
)

JSON_CHECK = "valid_json"
UNIQUENESS_CHECK = "field_uniqueness"
NOT_NULLABLE_CHECK = "not_nullable"

# The warehouse type of each contract kind, as Arrow (what DuckDB receives) and as polars (what
# pandera checks), read off `column_types.COLUMN_TYPES`. Timestamps are naive UTC with microsecond
# precision, like DuckDB's TIMESTAMP.
ARROW_TYPES: dict[str, pa.DataType] = types_by_kind(lambda t: t.arrow)
POLARS_TYPES: dict[str, pl.DataType] = types_by_kind(lambda t: t.polars)

_local = threading.local()


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a table's clean rows: the contract's columns at the warehouse's types."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind]) for c in table.extracted_columns])


def _duckdb() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per thread for the JSON check (connecting per batch costs more)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("set threads = 1")  # a batch is small; the other core reads the next one
    return con


def json_validity_arrow(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True where the value is NULL or valid JSON text (DuckDB's `json_valid`, as on the pandas
    path)."""
    json_values = pa.table({"v": values})  # noqa: F841 - DuckDB reads it by name
    result = _duckdb().execute(
        "select coalesce(json_valid(v::varchar), true) as ok from json_values"
    )
    return result.to_arrow_table().column("ok").combine_chunks()


def _polars_json_check(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col(data.key).map_batches(
            lambda s: pl.Series(s.name, json_validity_arrow(s.to_arrow())), return_dtype=pl.Boolean
        )
    )


def _polars_check(check) -> pap.Check:
    """The polars twin of a pandas-model check: same name, same statistics, same error text."""
    if check.name == JSON_CHECK:
        return pap.Check(_polars_json_check, name=JSON_CHECK, error=JSON_CHECK)
    builder = getattr(pap.Check, check.name, None)
    if builder is None:
        raise NotImplementedError(
            f"check {check.name!r} has no polars counterpart in credits_pipeline.validation.typed"
        )
    return builder(**check.statistics)


@functools.cache
def polars_schema(table_name: str) -> pap.DataFrameSchema:
    """The pandera polars schema of a table, derived from its pandas model.

    Uniqueness is left out on purpose: like `validate_batch`, the first row of an id is kept and the
    later copies are quarantined, which a schema-level `unique` cannot express. Coercion is left out
    too: `_conform` has already cast every column, row by row, before the checks run.
    """
    table = TABLES_BY_NAME[table_name]
    model_schema = MODELS[table_name].to_schema()
    columns = {}
    for col in table.extracted_columns:
        spec = model_schema.columns[col.name]
        columns[col.name] = pap.Column(
            POLARS_TYPES[col.kind],
            checks=[_polars_check(c) for c in spec.checks],
            nullable=spec.nullable,
            coerce=False,
        )
    return pap.DataFrameSchema(columns, strict="filter", coerce=False)


def _cast(series: pl.Series, target: pl.DataType) -> pl.Series:
    """Cast without raising: a value that cannot become `target` becomes NULL (reported by
    caller)."""
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is not None:
        series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    if series.dtype == target:
        return series
    if series.dtype == pl.String and isinstance(target, pl.Datetime):
        return series.str.to_datetime(time_unit="us", strict=False)
    out = series.cast(target, strict=False)
    if series.dtype.is_float() and target.is_integer():
        # a cast would truncate 1.5 to 1; pandas refuses non-integral floats, and so do we
        out = pl.select(
            pl.when(out.cast(pl.Float64) == series).then(out).otherwise(None)
        ).to_series()
    return out.alias(series.name)


def _conform(frame: pl.DataFrame, table: Table) -> tuple[pl.DataFrame, list[tuple[str, str, int]]]:
    """Cast every column to the warehouse type; return the frame and (column, check, row)
    failures."""
    model_schema = MODELS[table.name].to_schema()
    failures: list[tuple[str, str, int]] = []
    columns = []
    for col in table.extracted_columns:
        original = frame[col.name]
        cast = _cast(original, POLARS_TYPES[col.kind])
        if cast.null_count() != original.null_count():
            lost = (cast.is_null() & original.is_not_null()).arg_true()
            check = f"coerce_dtype('{model_schema.columns[col.name].dtype}')"
            failures.extend((col.name, check, int(i)) for i in lost)
        columns.append(cast)
    return pl.DataFrame(columns), failures


def validate_arrow_batch(table_name: str, batch: pa.Table | pa.RecordBatch) -> ValidatedBatch:
    """Validate one typed Arrow batch of `table_name`; `clean` is an Arrow table, `rejected` pandas.

    Same outcome as `validate_batch` on the same rows: rejected rows keep their original values as
    text with `_column` and `_reason`, domain warnings are counted as "column: check" -> rows.
    """
    table = TABLES_BY_NAME[table_name]
    names = table.extracted_names
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    missing = [c for c in names if c not in batch.column_names]
    if missing:
        raise KeyError(f"{table_name}: batch lacks column(s) {', '.join(missing)}")
    original = batch.select(names)
    # polars types from_arrow as DataFrame | Series; a RecordBatch always gives a DataFrame.
    frame, coerce_failures = _conform(pl.from_arrow(original, rechunk=False), table)  # type: ignore[arg-type]

    reject_reason: dict[int, tuple[str, str]] = {}
    warnings: Counter = Counter()
    original_column = {}

    def value_at(column: str, index: int) -> object:
        if column not in original_column:
            original_column[column] = original.column(column)
        return original_column[column][index].as_py()

    for column, check, index in coerce_failures:
        reject_reason.setdefault(
            index, (column, describe_failure(column, check, value_at(column, index)))
        )
    try:
        polars_schema(table_name).validate(frame, lazy=True)
    except pap.errors.SchemaErrors as errors:
        cases = errors.failure_cases.filter(pl.col("index").is_not_null())
        for column, check, _failure_case, index in cases.select(
            "column", "check", "failure_case", "index"
        ).iter_rows():
            if str(check).startswith(UNIQUENESS_CHECK):
                continue
            if is_quarantine_check(check):
                value = None if check == NOT_NULLABLE_CHECK else value_at(column, index)
                reject_reason.setdefault(
                    index, (str(column), describe_failure(column, check, value))
                )
            else:
                warnings[f"{column}: {check}"] += 1
    ids = frame["id"]
    duplicated = ids.is_not_null() & ~ids.is_first_distinct()
    if duplicated.any():
        for index in duplicated.arg_true():
            index = int(index)
            reject_reason.setdefault(
                index, ("id", describe_failure("id", UNIQUENESS_CHECK, ids[index]))
            )

    target = arrow_schema(table)
    if not reject_reason:
        clean = frame.to_arrow().cast(target)
        return ValidatedBatch(table_name, clean, empty_rejected(names), warnings)
    bad = sorted(reject_reason)
    rejected = pd.DataFrame(
        {
            c: [None if v is None else str(v) for v in original.column(c).take(bad).to_pylist()]
            for c in names
        }
    )
    rejected[FAILED_COLUMN] = [reject_reason[i][0] for i in bad]
    rejected[REASON_COLUMN] = [reject_reason[i][1] for i in bad]
    keep = pl.Series(range(len(frame))).is_in(bad).not_()
    clean = frame.filter(keep).to_arrow().cast(target)
    return ValidatedBatch(table_name, clean, rejected, warnings)
