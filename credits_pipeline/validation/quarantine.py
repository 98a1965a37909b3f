"""Split an extracted batch into rows to load and rows to quarantine, with reasons.

"Nothing lost, nothing invented": every row read from the source ends either in `raw.<table>` or in
`raw.<table>__rejected` with the column and the reason it could not be loaded. This module runs the
table's pandera model lazily (so every failure of every row is collected, not just the first),
quarantines the rows whose failures the warehouse cannot represent, and counts the rest as domain
warnings. It knows nothing of Dagster or of the warehouse.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pandera.pandas as pa
import pyarrow

from credits_pipeline.source.tables import TABLES_BY_NAME
from credits_pipeline.validation.models import MODELS
from credits_pipeline.validation.outcome import (
    FAILED_COLUMN,
    REASON_COLUMN,
    ValidatedBatch,
    describe_failure,
    empty_rejected,
    is_quarantine_check,
)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows keep their original values, as text, so nothing is lost in translation."""
    out = frame.astype(object).where(frame.notna(), None)
    return out.map(lambda v: None if v is None else str(v))


def validate_batch(
    table: str, frame: pd.DataFrame | pyarrow.Table | pyarrow.RecordBatch
) -> ValidatedBatch:
    """Validate one batch of `table` (columns named as in the contract, any dtypes).

    Duplicated ids inside the batch keep their first row; the later copies are quarantined.
    Duplicates against rows already in the warehouse are the loader's business (it sees both).
    A typed Arrow batch (the fast reader's) is validated by the same rules in polars
    (`typed.validate_arrow_batch`), because pandera-on-pandas would spend most of an extraction
    coercing it; a pandas frame takes the path below, unchanged.
    """
    if isinstance(frame, (pyarrow.Table, pyarrow.RecordBatch)):
        # imported lazily: polars and pandera's polars API are needed by typed batches only
        from credits_pipeline.validation.typed import validate_arrow_batch

        return validate_arrow_batch(table, frame)
    model = MODELS[table]
    columns = TABLES_BY_NAME[table].extracted_names
    frame = frame.reset_index(drop=True)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{table}: batch lacks column(s) {', '.join(missing)}")
    frame = frame[columns].copy()
    reject_reason: dict[int, tuple[str, str]] = {}
    original = frame
    frame, unparseable = _parse_timestamps(table, frame)
    for index, column, value in unparseable:
        reject_reason.setdefault(
            index, (column, describe_failure(column, "coerce_dtype('datetime64[ns]')", value))
        )
    try:
        clean = model.validate(frame, lazy=True)
        if not reject_reason:
            return ValidatedBatch(table, clean, empty_rejected(columns))
        cases = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    warnings: Counter = Counter()
    cases = cases[cases["index"].notna()]
    for column, check, failure_case, index in cases[
        ["column", "check", "failure_case", "index"]
    ].itertuples(index=False):
        index = int(index)
        if str(check).startswith("field_uniqueness"):
            continue  # decided below: the first row with an id is kept, later copies quarantined
        if is_quarantine_check(check):
            reject_reason.setdefault(
                index, (str(column), describe_failure(column, check, failure_case))
            )
        else:
            warnings[f"{column}: {check}"] += 1
    ids = frame["id"]
    duplicated = ids.notna() & ids.astype(str).duplicated(keep="first")
    for index in frame.index[duplicated]:
        reject_reason.setdefault(
            int(index), ("id", describe_failure("id", "field_uniqueness", ids[index]))
        )
    bad = sorted(reject_reason)
    rejected = _as_text(original.loc[bad])
    rejected[FAILED_COLUMN] = [reject_reason[i][0] for i in bad]
    rejected[REASON_COLUMN] = [reject_reason[i][1] for i in bad]
    keep = frame.drop(index=bad)
    # The rows left pass every quarantine check, so this second pass only coerces them; domain
    # failures are already counted above.
    try:
        clean = model.validate(keep, lazy=True)
    except pa.errors.SchemaErrors:
        clean = _coerce_only(model, keep)
    return ValidatedBatch(
        table, clean.reset_index(drop=True), rejected.reset_index(drop=True), warnings
    )


def _parse_timestamps(
    table: str, frame: pd.DataFrame
) -> tuple[pd.DataFrame, list[tuple[int, str, object]]]:
    """Parse timestamp columns value by value (`format="mixed"`), reporting what cannot be parsed.

    Drivers hand timestamps over as datetimes (MySQL, PostgreSQL) or as text in whatever format
    the application wrote (SQLite: with and without fractions, 'T' or space). pandas would infer
    one format from the first value and reject the whole column; parsing each value on its own
    keeps the good ones and lets the bad ones be quarantined by name.
    """
    unparseable: list[tuple[int, str, object]] = []
    out = frame
    for column in TABLES_BY_NAME[table].extracted_columns:
        values = frame[column.name]
        if column.kind != "ts" or values.dtype != object:
            continue
        # ISO 8601 in every variant drivers and SQLite produce parses vectorised; only what that
        # misses is parsed value by value (format="mixed" costs tens of microseconds a value)
        # (utc=True: a value carrying an offset is converted; one without is UTC already)
        parsed = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
        retry = values.notna() & parsed.isna()
        if retry.any():
            again = pd.to_datetime(values[retry], format="mixed", errors="coerce", utc=True)
            parsed = parsed.where(~retry, again.reindex(parsed.index))
        parsed = parsed.dt.tz_localize(None)
        for index in frame.index[values.notna() & parsed.isna()]:
            unparseable.append((int(index), column.name, values[index]))
        out = out.assign(**{column.name: parsed})
    return out, unparseable


def _coerce_only(model: type[pa.DataFrameModel], frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce to the model's dtypes without running its checks (domain failures are not errors)."""
    schema = model.to_schema()
    out = frame.copy()
    for name, column in schema.columns.items():
        out[name] = column.dtype.coerce(out[name])
    return out
