"""Reading `syllaby_v2`: UTC engines, the contract check, and bounded batches of named columns.

The pipeline only reads the operational database, and it must read it the same way on MySQL,
MariaDB, PostgreSQL and SQLite: UTC sessions, columns selected by name (never `SELECT *`, which
would copy passwords and personal data), values bound as parameters, results streamed in batches
so memory stays flat however large the ledger grows, and the balances read in the same snapshot
as the ledger rows they are compared with. Failures to connect or a table that does not match the
contract become one `SourceError` naming the table, the column and the cause; the URL is shown
without credentials. The Dagster resource that opens connections and the consistent cut lives
above this module and `fast_reader` (`resource.SourceDatabase`); neither reader imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from credits_pipeline.redaction import redact_text
from credits_pipeline.source import drift
from credits_pipeline.source.tables import Table

DEFAULT_BATCH_SIZE = 100_000


class SourceError(Exception):
    """The source cannot be read as the contract says; the message names table, column, cause."""


def dialect_family(url: str) -> str:
    """'mysql' (MySQL and MariaDB), 'postgresql' or 'sqlite'."""
    name = sa.engine.make_url(url).get_backend_name()
    return "mysql" if name in ("mysql", "mariadb") else name


def create_source_engine(url: str) -> sa.Engine:
    """An engine whose sessions speak UTC, so TIMESTAMP values arrive as UTC wall-clock times."""
    family = dialect_family(url)
    connect_args: dict[str, Any] = {}
    if family == "mysql":
        connect_args["init_command"] = "SET time_zone = '+00:00'"
    elif family == "postgresql":
        connect_args["options"] = "-c timezone=UTC"
    return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


def first_error_line(exc: BaseException, url: str | None = None) -> str:
    """The driver's first line of error, redacted: drivers may echo the URL or DSN they were
    given (shared by the readers, the resource and the observation)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(text[0], [url] if url else []) if text else type(exc).__name__


def present_columns(conn: sa.Connection, table: Table) -> set[str]:
    """The table's column names in the source (lower case); one clear message if it is missing."""
    try:
        present = {c["name"].lower() for c in sa.inspect(conn).get_columns(table.name)}
    except sa.exc.NoSuchTableError:
        present = set()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(
            f"syllaby_v2.{table.name}: cannot read the table's columns: {first_error_line(exc)}"
        ) from None
    if not present:
        raise SourceError(
            f"syllaby_v2.{table.name}: the table does not exist in the source database"
        )
    return present


def check_table(conn: sa.Connection, table: Table) -> None:
    """Fail with one clear message when the table or a required contract column is missing.

    Absent optional columns are recorded (`drift.record`) for `select_sql` and the drift check.
    """
    present = present_columns(conn, table)
    found = drift.compare(table, present)  # optional columns may be absent: read as NULL, WARN
    drift.record(found)
    if found.missing_required:
        raise SourceError(drift.required_message(table, found))


def select_sql(conn: sa.Connection, table: Table, where: str | None) -> str:
    """`SELECT <contract columns> FROM <table> [WHERE ...] ORDER BY id`, identifiers quoted."""
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(drift.select_items(table, quote, conn.dialect.name))  # absent optional: NULL
    sql = f"SELECT {cols} FROM {quote(table.name)}"
    if where:
        sql += f" WHERE {where}"
    return sql + f" ORDER BY {quote('id')}"


def read_batches(
    conn: sa.Connection,
    table: Table,
    where: str | None = None,
    params: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[pd.DataFrame]:
    """Stream the table's contract columns in DataFrames of at most `batch_size` rows.

    Values arrive as the driver gives them (object columns), without SQLAlchemy's type
    processing, so a malformed value reaches validation instead of raising inside the driver.
    `where` is SQL written by the pipeline with `:name` placeholders; values go in `params`.
    """
    statement = sa.text(select_sql(conn, table, where))
    try:
        result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(
            statement, dict(params or {})
        )
        names = table.extracted_names
        for rows in result.partitions(batch_size):
            yield _object_frame(rows, names)
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(
            f"syllaby_v2.{table.name}: reading failed: {first_error_line(exc)}"
        ) from None


def _object_frame(rows: Sequence[Any], names: list[str]) -> pd.DataFrame:
    """Rows as object columns, values exactly as the driver gave them.

    `DataFrame.from_records` would turn an integer column holding a NULL into floats, and ids
    above 2**53 would silently lose digits before validation ever saw them.
    """
    columns = list(zip(*rows, strict=False)) if rows else [() for _ in names]
    return pd.DataFrame(
        {name: pd.Series(col, dtype=object) for name, col in zip(names, columns, strict=False)}
    )
