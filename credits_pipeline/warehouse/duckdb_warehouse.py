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
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from credits_pipeline import settings
from credits_pipeline.names import WAREHOUSE_SCHEMAS
from credits_pipeline.warehouse import cost, memory


class DuckDBWarehouse(dg.ConfigurableResource):
    """Connections to the DuckDB warehouse file (`CREDITS_WAREHOUSE_PATH`)."""

    path: str = ""

    def resolved_path(self) -> Path:
        return Path(self.path) if self.path else settings.warehouse_path()

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
