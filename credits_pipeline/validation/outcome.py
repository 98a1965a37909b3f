"""What validating a batch yields, and the reason texts, shared by both validation paths.

A batch is validated on one of two paths — pandera on pandas (`quarantine`, for the object columns
of the SQLAlchemy reader) or pandera on polars (`typed`, for the fast reader's Arrow batches) — and
both must split it the same way and word a rejected row's reason the same way. What they share
lives here, below both, so neither path imports the other's helpers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow

from credits_pipeline.validation.models import QUARANTINE_CHECK_PREFIXES

REASON_COLUMN = "_reason"
FAILED_COLUMN = "_column"
MAX_REASON_EXAMPLE = 80


@dataclass
class ValidatedBatch:
    """The outcome of validating one batch of one table."""

    table: str
    clean: pd.DataFrame | pyarrow.Table  # Arrow when the batch came typed from the fast reader
    rejected: pd.DataFrame  # the table's columns as text, plus `_reason` and `_column`
    domain_warnings: Counter = field(default_factory=Counter)  # "column: check" -> rows

    @property
    def rows_in(self) -> int:
        return len(self.clean) + len(self.rejected)


def is_quarantine_check(check: str) -> bool:
    """Whether a failed check means the warehouse cannot store the row (else: a domain warning)."""
    return str(check).startswith(QUARANTINE_CHECK_PREFIXES)


def describe_failure(column: str, check: str, failure_case: object) -> str:
    """A sentence naming the column and the value at fault, e.g. for the rejected table."""
    value = repr(failure_case)
    if len(value) > MAX_REASON_EXAMPLE:
        value = value[: MAX_REASON_EXAMPLE - 3] + "..."
    check = str(check)
    if check.startswith("field_uniqueness"):
        return f"{column}: duplicate primary key {value} (a later copy of an id already seen)"
    if check.startswith("not_nullable"):
        return f"{column}: NULL primary key"
    if check.startswith("valid_json"):
        return f"{column}: malformed JSON text {value}"
    return f"{column}: value {value} cannot be stored as the column's type ({check})"


def empty_rejected(columns: list[str]) -> pd.DataFrame:
    """The rejected frame of a batch without rejected rows: the columns as text, no rows."""
    return pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in [*columns, FAILED_COLUMN, REASON_COLUMN]}
    )
