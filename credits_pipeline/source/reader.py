"""Reading `syllaby_v2`: connections, the consistent cut, and bounded batches of named columns.

The pipeline only reads the operational database, and it must read it the same way on MySQL,
MariaDB, PostgreSQL and SQLite: UTC sessions, columns selected by name (never `SELECT *`, which
would copy passwords and personal data), values bound as parameters, results streamed in batches
so memory stays flat however large the ledger grows, and the balances read in the same snapshot
as the ledger rows they are compared with. Failures to connect or a table that does not match the
contract become one `SourceError` naming the table, the column and the cause; the URL is shown
without credentials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from credits_pipeline import settings
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


def _first_line(exc: BaseException, url: str | None = None) -> str:
    """The driver's first line of error, redacted: drivers may echo the URL or DSN they were
    given."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(text[0], [url] if url else []) if text else type(exc).__name__


class SourceDatabase(dg.ConfigurableResource):
    """The operational database `syllaby_v2` (`CREDITS_SOURCE_URL`; `demo`: the SQLite demo)."""

    url: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE

    def uses_demo(self) -> bool:
        """The embedded demo database, only ever by explicit choice (`url` or the variable
        `demo`)."""
        return self.url == settings.DEMO_SOURCE or (
            not self.url and settings.source_url_is_default()
        )

    def resolved_url(self) -> str:
        if self.uses_demo():
            return settings.parse_source_url(settings.DEMO_SOURCE)
        return self.url or settings.source_url()

    def display_name(self) -> str:
        return settings.redact_url(self.resolved_url())

    def family(self) -> str:
        return dialect_family(self.resolved_url())

    def engine(self) -> sa.Engine:
        url = self.resolved_url()
        if self.uses_demo():
            _ensure_demo_source(url)
        return create_source_engine(url)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        engine = self.engine()
        try:
            try:
                conn = engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(
                    f"cannot connect to the source database {self.display_name()}: "
                    f"{_first_line(exc, self.resolved_url())}"
                ) from None
            with conn:
                yield conn
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def consistent_snapshot(self) -> Iterator[tuple[sa.Connection, dt.datetime]]:
        """A read-only transaction in which every query sees one snapshot, and the cut's time.

        InnoDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT`; PostgreSQL: `REPEATABLE READ`;
        SQLite: one read transaction. The cut time is taken inside the snapshot (the database's
        clock on MySQL/PostgreSQL), truncated to the second, unless `CREDITS_CUTOFF_AT` pins it.
        """
        family = self.family()
        with self.connect() as conn:
            if family == "mysql":
                conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                now = conn.exec_driver_sql("SELECT UTC_TIMESTAMP()").scalar_one()
            elif family == "postgresql":
                conn = conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                conn.begin()
                now = conn.exec_driver_sql(
                    "SELECT (now() AT TIME ZONE 'UTC')::timestamp"
                ).scalar_one()
            else:
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql(
                    "SELECT count(*) FROM sqlite_master"
                ).scalar_one()  # takes the read lock
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            cut = settings.pinned_cutoff() or pd.Timestamp(now).to_pydatetime().replace(
                microsecond=0, tzinfo=None
            )
            try:
                yield conn, cut
            finally:
                if family == "postgresql":
                    conn.rollback()
                else:
                    conn.exec_driver_sql("ROLLBACK")  # read-only: nothing to keep

    def check_table(self, conn: sa.Connection, table: Table) -> None:
        check_table(conn, table)

    def read_batches(
        self,
        conn: sa.Connection,
        table: Table,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[pd.DataFrame]:
        return read_batches(conn, table, where, params, self.batch_size)

    def read_batches_fast(
        self,
        conn: sa.Connection,
        table: Table,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:
        """`read_batches` through connectorx on MySQL/PostgreSQL (typed Arrow batches), else `conn`.

        connectorx reads on a connection of its own, outside `conn`'s transaction: use it where no
        snapshot is shared (the closed ledger partitions), never inside `consistent_snapshot`.
        Falls back to the robust path on `conn` if connectorx fails (`fast_reader.read_batches`).
        """
        from credits_pipeline.source import fast_reader  # imports this module

        return fast_reader.read_batches(
            self.resolved_url(), table, where, params, self.batch_size, fallback_conn=conn
        )


def present_columns(conn: sa.Connection, table: Table) -> set[str]:
    """The table's column names in the source (lower case); one clear message if it is missing."""
    try:
        present = {c["name"].lower() for c in sa.inspect(conn).get_columns(table.name)}
    except sa.exc.NoSuchTableError:
        present = set()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(
            f"syllaby_v2.{table.name}: cannot read the table's columns: {_first_line(exc)}"
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
        raise SourceError(f"syllaby_v2.{table.name}: reading failed: {_first_line(exc)}") from None


def _object_frame(rows: Sequence[Any], names: list[str]) -> pd.DataFrame:
    """Rows as object columns, values exactly as the driver gave them.

    `DataFrame.from_records` would turn an integer column holding a NULL into floats, and ids
    above 2**53 would silently lose digits before validation ever saw them.
    """
    columns = list(zip(*rows, strict=False)) if rows else [() for _ in names]
    return pd.DataFrame(
        {name: pd.Series(col, dtype=object) for name, col in zip(names, columns, strict=False)}
    )


def _ensure_demo_source(url: str) -> None:
    """Create the embedded SQLite demo database on first use (`CREDITS_SOURCE_URL=demo`)."""
    path = settings.default_source_path()
    if path.exists():
        return
    from credits_pipeline.source.demo import generate  # imported lazily: only the default needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    generate(url, users=settings.demo_users(), anomalies=True)
