"""The source database as a Dagster resource: which database, the consistent cut, and the readers.

The resource sits above the two readers it chooses between — `reader` (SQLAlchemy, any dialect,
values as the driver gives them) and `fast_reader` (connectorx, typed Arrow on MySQL/PostgreSQL) —
so neither reader knows of Dagster's configuration or of the other's caller. It resolves the URL
(`CREDITS_SOURCE_URL`, or the embedded SQLite demo, created on first use), opens connections that
fail with one redacted `SourceError`, and opens the read-only snapshot the extraction reads in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.source import fast_reader, reader
from credits_pipeline.source.tables import Table


class SourceDatabase(dg.ConfigurableResource):
    """The operational database `syllaby_v2` (`CREDITS_SOURCE_URL`; `demo`: the SQLite demo)."""

    url: str = ""
    batch_size: int = reader.DEFAULT_BATCH_SIZE

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
        return reader.dialect_family(self.resolved_url())

    def engine(self) -> sa.Engine:
        url = self.resolved_url()
        if self.uses_demo():
            _ensure_demo_source(url)
        return reader.create_source_engine(url)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        engine = self.engine()
        try:
            try:
                conn = engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                raise reader.SourceError(
                    f"cannot connect to the source database {self.display_name()}: "
                    f"{reader.first_error_line(exc, self.resolved_url())}"
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
        reader.check_table(conn, table)

    def read_batches(
        self,
        conn: sa.Connection,
        table: Table,
        where: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[pd.DataFrame]:
        return reader.read_batches(conn, table, where, params, self.batch_size)

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
        return fast_reader.read_batches(
            self.resolved_url(), table, where, params, self.batch_size, fallback_conn=conn
        )


def _ensure_demo_source(url: str) -> None:
    """Create the embedded SQLite demo database on first use (`CREDITS_SOURCE_URL=demo`)."""
    path = settings.default_source_path()
    if path.exists():
        return
    from credits_pipeline.source.demo import generate  # imported lazily: only the default needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    generate(url, users=settings.demo_users(), anomalies=True)
