"""The embedded DuckDB warehouse, as a Dagster resource.

DuckDB is the default warehouse because it needs nothing but a file: the demo, the tests and a
single-machine deployment all use it. One process may write a DuckDB file at a time, so every asset
opens a short-lived connection through this resource and the jobs run in process; each write that
must be atomic runs inside one explicit transaction (`transaction()`), so a failure mid-load rolls
back and leaves the previous state as it was. Every connection runs under a memory limit and spills
to a temp directory (`memory.py`), so a large ledger is slow rather than fatal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pyarrow as pa

from credits_pipeline import settings
from credits_pipeline.names import WAREHOUSE_SCHEMAS
from credits_pipeline.warehouse import cost, memory


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
            memory.apply(con, path)
            if not read_only:
                for schema in WAREHOUSE_SCHEMAS:
                    con.execute(f"create schema if not exists {schema}")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                yield con
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")

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
