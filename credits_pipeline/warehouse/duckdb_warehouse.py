"""The embedded DuckDB warehouse, as a Dagster resource.

DuckDB is the default warehouse because it needs nothing but a file: the demo, the tests and a
single-machine deployment all use it. One process may write a DuckDB file at a time, so every asset
opens a short-lived connection through this resource and the jobs run in process; each write that
must be atomic runs inside one explicit transaction (`transaction()`), so a failure mid-load rolls
back and leaves the previous state as it was. Every connection runs under a memory limit and spills
to a temp directory (`memory.py`), so a large ledger is slow rather than fatal.

Below the resource, DuckDB's own answers to what `session.py` asks of an engine: replacing tables
(`replace_tables`) and putting batches into staging (`DuckDBStaging`, for `raw_tables.Stager`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from credits_pipeline import settings
from credits_pipeline.names import STAGING_SCHEMA, WAREHOUSE_SCHEMAS
from credits_pipeline.source.tables import Table
from credits_pipeline.warehouse import cost, memory
from credits_pipeline.warehouse.interface import in_transaction
from credits_pipeline.warehouse.raw_tables import column_types, ensure_raw_tables, raw_columns_ddl

# DuckDB threads while appending one Arrow batch to staging (see `DuckDBStaging.append_clean`).
ARROW_APPEND_THREADS = 1


class DuckDBWarehouse(dg.ConfigurableResource):
    """Connections to the DuckDB warehouse file (`CREDITS_WAREHOUSE_PATH`)."""

    kind: ClassVar[str] = "duckdb"
    path: str = ""

    def resolved_path(self) -> Path:
        return Path(self.path) if self.path else settings.warehouse_path()

    def describe(self) -> str:
        """Where the warehouse is, for people: the DuckDB file."""
        return str(self.resolved_path())

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        path = self.resolved_path()
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(path), read_only=read_only)
        try:
            con.execute("set timezone = 'UTC'")
            # Always bounded, sized from the machine or set by the operator; spills beside the
            # warehouse file (`memory.py` says why and how much).
            limits = memory.apply(con, path)
            if not read_only:
                for schema in WAREHOUSE_SCHEMAS:
                    con.execute(f"create schema if not exists {schema}")
            try:
                yield con
            except duckdb.OutOfMemoryException as exc:
                raise memory.out_of_memory_failure(exc, limits) from None
        finally:
            con.close()
            memory.release_unused_memory()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT; any exception rolls everything back."""
        with self.connect() as con, in_transaction(con):
            yield con

    def usage_metadata(self, con: duckdb.DuckDBPyConnection) -> dict[str, dg.MetadataValue]:
        """The memory limit and spill directory `con` runs under, read back from DuckDB.

        Read from the connection rather than from the settings, so the metadata states what was in
        force (the BigQuery resource answers the same call with bytes processed/billed).
        """
        return cost.connection_usage_metadata(con)

    def dbt_usage(self, events: list, run_results: dict) -> list:
        """dbt on DuckDB bills nothing: the events as they are."""
        return events

    @contextlib.contextmanager
    def session_if_exists(
        self, read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A connection to the warehouse file, or None before the first run has created it."""
        if not self.resolved_path().exists():
            yield None
            return
        with self.connect(read_only=read_only) as con:
            yield con

    def preview_session(
        self,
    ) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection | None]:
        """A read-only connection for the dbt models' previews; None before the file exists."""
        return self.session_if_exists(read_only=True)


def replace_tables(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table | str]) -> None:
    """DuckDB's `session.replace_tables`: create or replace each table in the caller's transaction.

    DDL is transactional in DuckDB, so every table is replaced at the caller's commit or not at all.
    """
    for target, source in tables.items():
        schema = target.split(".", 1)[0]
        con.execute(f"create schema if not exists {schema}")
        if isinstance(source, str):
            con.execute(f"create or replace table {target} as select * from {source}")
            continue
        staged = "_replace_" + target.replace(".", "_")
        con.register(staged, source)
        try:
            con.execute(f"create or replace table {target} as select * from {staged}")
        finally:
            con.unregister(staged)


class DuckDBStaging:
    """DuckDB's staging steps for `raw_tables.Stager` (`raw_tables.StagingEngine`).

    DuckDB scans a pandas frame or an Arrow table in place, so a batch goes into staging with one
    `insert ... select` and no copy; the rows of a table are numbered as they are inserted, so its
    `rowid` is the arrival order.
    """

    arrival_order = "rowid"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def ensure_raw_tables(self, table: Table) -> None:
        ensure_raw_tables(self.con, table)

    def create_stage(self, stage: str, table: Table) -> None:
        self.con.execute(f"create schema if not exists {STAGING_SCHEMA}")
        self.con.execute(f"create or replace table {stage} ({raw_columns_ddl(table, False)})")

    def append_clean(self, stage: str, table: Table, clean: pa.Table | pd.DataFrame) -> None:
        """Insert the rows cast to the stage's types.

        For an Arrow batch (the fast reader's) the rows are typed already (`validation.typed`), so
        the casts are no-ops kept only to state the target types; a pandas frame of nullable or
        object columns is converted value by value.
        """
        casts = ", ".join(f"cast({n} as {t})" for n, t in column_types(table))
        if isinstance(clean, pd.DataFrame):
            self.con.register("_clean_batch", clean[table.extracted_names])
            try:
                self.con.execute(f"insert into {stage} select {casts} from _clean_batch")
            finally:
                self.con.unregister("_clean_batch")
            return
        threads = self.con.execute("select current_setting('threads')").fetchone()[0]  # type: ignore[index]
        self.con.register("_clean_arrow_batch", clean.select(table.extracted_names))
        try:
            # One batch is one morsel for DuckDB: more threads cannot split it, they only fight
            # the reader (connectorx, the source's server) for the cores. Measured on 2 cores:
            # staging 5M ledger rows took ~37 s with the default threads, ~20 s with one.
            self.con.execute(f"set threads = {ARROW_APPEND_THREADS}")
            self.con.execute(f"insert into {stage} select {casts} from _clean_arrow_batch")
        finally:
            self.con.execute(f"set threads = {int(threads)}")
            self.con.unregister("_clean_arrow_batch")

    def append_rejected(self, stage: str, rejected: pd.DataFrame) -> None:
        self.con.register("_rejected_batch", rejected)
        try:
            self.con.execute(f"insert into {stage} select * from _rejected_batch")
        finally:
            self.con.unregister("_rejected_batch")

    def timestamp_text(self, column: str) -> str:
        return f"cast({column} as varchar)"

    def drop_stage(self, *relations: str) -> None:
        """Dropped at once: DuckDB's DDL is transactional, inside the caller's transaction too."""
        for relation in relations:
            self.con.execute(f"drop table if exists {relation}")
