"""The fast read path: MySQL/MariaDB and PostgreSQL tables streamed as typed Arrow batches.

Reading the ledger through SQLAlchemy and a pure-Python driver turns every value into a Python
object, and validating object columns costs more than reading them: a few million ledger rows take
minutes. connectorx decodes the wire protocol in Rust straight into Arrow columns, so a batch
arrives typed and is validated in polars (`validation.typed`) and loaded into DuckDB as Arrow
(`Stager.append_arrow`). It keeps the contract of `reader.read_batches` — the contract's columns by
name, `ORDER BY id`, at most `batch_size` rows per batch, UTC timestamps, `where` written by the
pipeline with `:name` placeholders — and, because connectorx refuses some values the robust path
accepts and hands to the quarantine (a zero date, an unexpected column type), any connectorx failure
falls back to `reader.read_batches` for the rest of the read: rows after the last id already
delivered, so nothing is read twice or lost. connectorx reads a result ahead of its consumer without
bound, so the read is split into keyset-paginated queries (`id > last id ... LIMIT`) to keep memory
flat. SQLite always takes the robust path. Every read that shares no snapshot takes it: the
ledger's partitions and the content tables (`raw/<table>`: 1.3 M videos took 35 s through
SQLAlchemy at 100,000 demo users); the consistent cut, which must read inside its snapshot,
does not.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from credits_pipeline import settings
from credits_pipeline.redaction import redact_text
from credits_pipeline.source.reader import (
    DEFAULT_BATCH_SIZE,
    SourceError,
    create_source_engine,
    dialect_family,
    first_error_line,
    select_sql,
)
from credits_pipeline.source.reader import read_batches as read_batches_sqlalchemy
from credits_pipeline.source.tables import Table

# connectorx URL schemes of the families the fast path serves (everything else: SQLAlchemy).
CONNECTORX_SCHEMES = {"mysql": "mysql", "postgresql": "postgresql"}

# Statements connectorx runs on its connection before the query, so that TIMESTAMP values come as
# UTC wall-clock times, exactly like the SQLAlchemy engine's sessions (`create_source_engine`):
# MySQL converts TIMESTAMP columns to the *session* time zone, and connectorx returns what it is
# sent.
UTC_SESSION = {
    "mysql": ["SET time_zone = '+00:00'"],
    "postgresql": ["SET TIME ZONE 'UTC'"],
}

# Dialects used only to quote identifiers and render literals. The "named" paramstyle matters: the
# pymysql/psycopg dialects' "format" style would double every `%` in the SQL text, which no driver
# un-doubles once connectorx sends it verbatim.
_RENDER_DIALECTS: dict[str, Callable[[], sa.engine.Dialect]] = {
    "mysql": lambda: mysql.dialect(paramstyle="named"),
    "postgresql": lambda: postgresql.dialect(paramstyle="named"),
}

# Python types of the values the pipeline binds, and the SQLAlchemy type that renders each one.
# Anything else (None, bytes, arbitrary objects) is refused: see `render_sql`.
_LITERAL_TYPES: tuple[tuple[type, Callable[[], sa.types.TypeEngine]], ...] = (
    (bool, sa.Boolean),  # before int: bool is an int
    (int, sa.BigInteger),
    (dt.datetime, sa.DateTime),  # before date: a datetime is a date
    (dt.date, sa.Date),
    (float, sa.Float),
    (decimal.Decimal, lambda: sa.Numeric(asdecimal=True)),
    (str, sa.String),
)

RESUME_PARAM = "_fast_reader_resume_after_id"

# connectorx reads a query's whole result ahead of the consumer (measured: ~650 MB buffered for 3M
# ledger rows while the first batch was still being loaded), so each query is limited to this many
# batches and the next chunk continues after the last id: memory stays bounded by the chunk.
CHUNK_BATCHES = 5


class FastReadUnavailable(Exception):
    """connectorx could not read this query; the caller reads it the robust way instead."""


class _DialectOnly:
    """What `reader.select_sql` needs of a connection: its dialect (to quote identifiers)."""

    def __init__(self, dialect: sa.engine.Dialect):
        self.dialect = dialect


def supports(url: str) -> bool:
    """Whether the fast path can read this source (MySQL, MariaDB, PostgreSQL)."""
    return dialect_family(url) in CONNECTORX_SCHEMES


def connectorx_url(url: str) -> str:
    """The configured SQLAlchemy URL in connectorx's spelling (`mysql+pymysql://` → `mysql://`).

    The result carries the password: pass it to connectorx only, never to a log (the callers log
    `settings.redact_url(url)`).
    """
    parsed = sa.engine.make_url(url)
    family = dialect_family(url)
    if family not in CONNECTORX_SCHEMES:
        raise FastReadUnavailable(f"connectorx does not read {parsed.get_backend_name()} sources")
    return parsed.set(drivername=CONNECTORX_SCHEMES[family]).render_as_string(hide_password=False)


def _literal_type(name: str, value: object) -> sa.types.TypeEngine:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        raise TypeError(f"parameter {name!r}: pass naive UTC datetimes (the sessions are UTC)")
    for python_type, sa_type in _LITERAL_TYPES:
        if isinstance(value, python_type):
            return sa_type()
    raise TypeError(f"parameter {name!r}: cannot render a {type(value).__name__} as an SQL literal")


def render_sql(
    family: str, table: Table, where: str | None, params: Mapping[str, Any] | None
) -> str:
    """The SELECT of `reader.select_sql` with every `:name` replaced by its value as an SQL literal.

    connectorx takes a finished SQL string, with no bound parameters. The values here are the
    pipeline's own (partition bounds, watermarks, ids), never user text, but they are still not
    formatted into the string by hand: SQLAlchemy's dialect literal processors render each one
    from its declared type — a datetime as a quoted timestamp, an int through `int()`, a string
    with the dialect's quote and backslash escaping — so a value can never end the literal and
    inject SQL. Types without a safe rendering (None, bytes, objects) are refused, and so is a
    placeholder without a value.
    """
    dialect = _RENDER_DIALECTS[family]()
    # select_sql reads nothing of a connection but its dialect: _DialectOnly stands in for one.
    statement = sa.text(select_sql(cast(sa.Connection, _DialectOnly(dialect)), table, where))
    params = dict(params or {})
    placeholders = set(statement._bindparams)
    unbound = placeholders - params.keys()
    if unbound:
        raise KeyError(f"no value for placeholder(s) {', '.join(sorted(unbound))}")
    statement = statement.bindparams(
        *(
            sa.bindparam(name, params[name], type_=_literal_type(name, params[name]))
            for name in sorted(placeholders)
        )
    )
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _stream(url: str, sql: str, family: str, batch_size: int) -> pa.RecordBatchReader:
    import connectorx as cx  # imported lazily: only MySQL/PostgreSQL sources need it

    return cx.read_sql(
        connectorx_url(url),
        sql,
        return_type="arrow_stream",
        batch_size=batch_size,
        pre_execution_query=UTC_SESSION[family],
    )


def _log_fallback(reason: str) -> None:
    dg.get_dagster_logger().warning(reason)


def read_batches(
    url: str,
    table: Table,
    where: str | None = None,
    params: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    fallback_conn: sa.Connection | None = None,
    on_fallback: Callable[[str], None] = _log_fallback,
) -> Iterator[pa.Table | pd.DataFrame]:
    """Stream the table's contract columns: Arrow tables from connectorx, or the robust frames.

    Same contract as `reader.read_batches` (pass either kind of batch to `validate_batch`). On a
    connectorx failure — at the start or mid-stream — `on_fallback` is told why and the rest of the
    read (ids above the last delivered one) comes from `reader.read_batches` on `fallback_conn`, or
    on a connection of its own when none is given. Errors of the robust path are `SourceError`s.
    """
    family = dialect_family(url)
    if family not in CONNECTORX_SCHEMES:
        yield from _read_robust(url, table, where, params, batch_size, None, fallback_conn)
        return
    chunk_rows = batch_size * CHUNK_BATCHES
    last_id: int | None = None
    while True:  # one keyset-paginated query per chunk: connectorx buffers a whole result ahead
        chunk_where, chunk_params = _after(where, params, last_id)
        sql = f"{render_sql(family, table, chunk_where, chunk_params)} LIMIT {int(chunk_rows)}"
        try:
            stream = _stream(url, sql, family, batch_size)
        except Exception as exc:
            on_fallback(_fallback_reason(url, table, exc, last_id))
            break
        rows_in_chunk = 0
        failed = False
        try:
            while True:
                try:
                    batch = stream.read_next_batch()
                except StopIteration:
                    break
                except (
                    BaseException
                ) as exc:  # a Rust panic arrives as pyo3's PanicException (BaseException)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                        raise
                    on_fallback(_fallback_reason(url, table, exc, last_id))
                    failed = True
                    break
                if batch.num_rows == 0:
                    continue
                rows_in_chunk += batch.num_rows
                last_id = int(
                    pc.max(batch.column(batch.schema.get_field_index("id"))).as_py()
                )  # ORDER BY id
                yield pa.Table.from_batches([batch])
        finally:
            stream.close()  # stops connectorx's reading thread when the consumer stops early
        if failed:
            break
        if rows_in_chunk < chunk_rows:
            return
    yield from _read_robust(url, table, where, params, batch_size, last_id, fallback_conn)


def _fallback_reason(url: str, table: Table, exc: BaseException, last_id: int | None) -> str:
    where = "from the start" if last_id is None else f"after id {last_id}"
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # connectorx may echo its connection string (in its own spelling): no secret reaches a log
    cause = redact_text(cause, [url, connectorx_url(url)])
    return (
        f"syllaby_v2.{table.name}: the fast reader (connectorx) failed on "
        f"{settings.redact_url(url)} ({type(exc).__name__}: {cause}); reading {where} through "
        "SQLAlchemy instead"
    )


def _after(
    where: str | None, params: Mapping[str, Any] | None, after_id: int | None
) -> tuple[str | None, dict]:
    """`where`, restricted to ids above `after_id` (keyset pagination and the fallback's resume)."""
    params = dict(params or {})
    if after_id is None:
        return where, params
    params[RESUME_PARAM] = after_id
    return (f"({where}) AND id > :{RESUME_PARAM}" if where else f"id > :{RESUME_PARAM}"), params


def _read_robust(
    url: str,
    table: Table,
    where: str | None,
    params: Mapping[str, Any] | None,
    batch_size: int,
    after_id: int | None,
    conn: sa.Connection | None,
) -> Iterator[pd.DataFrame]:
    """`reader.read_batches`, restricted to ids above `after_id` when the fast path got that far."""
    where, params = _after(where, params, after_id)
    if conn is not None:
        yield from read_batches_sqlalchemy(conn, table, where, params, batch_size)
        return
    engine = create_source_engine(url)
    try:
        try:
            own = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"cannot connect to the source database {settings.redact_url(url)}: "
                f"{first_error_line(exc, url)}"
            ) from None
        with own:
            yield from read_batches_sqlalchemy(own, table, where, params, batch_size)
    finally:
        engine.dispose()
