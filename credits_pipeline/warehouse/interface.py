"""The warehouse as the rooms see it: one interface, a DuckDB and a BigQuery implementation.

Why: the engine is chosen once, in `definitions.py` (`DuckDBWarehouse` or `BigQueryWarehouse`
under the resource key `warehouse`). Every asset, check and sensor asks for a `WarehouseParam` and
talks to what this protocol promises; none names an engine's class, so a room written once runs on
both. What a session can do beyond SQL (stream Arrow out, replace tables atomically, stage a raw
table) is asked of `session.py`, which also says what a transaction means on each engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import dagster as dg


class Warehouse(Protocol):
    """What every warehouse resource offers (`DuckDBWarehouse`, `BigQueryWarehouse`)."""

    @property
    def kind(self) -> str:
        """ "duckdb" or "bigquery": the kind shown in the UI, never a branch in a room."""
        ...

    def describe(self) -> str:
        """Where the warehouse is, in one line for people (no credential)."""
        ...

    def connect(self, read_only: bool = False) -> contextlib.AbstractContextManager[Any]:
        """A session for the duration of the block (writes commit statement by statement)."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A session inside BEGIN ... COMMIT: rolled back when the block raises."""
        ...

    def usage_metadata(self, con: Any) -> dict[str, dg.MetadataValue]:
        """What the session used, as asset metadata (DuckDB: memory bound; BigQuery: bytes)."""
        ...

    def dbt_usage(self, events: list, run_results: dict) -> list:
        """dbt's events with what each model used added (BigQuery: bytes; DuckDB: unchanged)."""
        ...

    def session_if_exists(self) -> contextlib.AbstractContextManager[Any | None]:
        """A session, or None when the warehouse does not exist yet (a DuckDB file before the
        first run): for reading what it holds without creating it."""
        ...

    def preview_session(self) -> contextlib.AbstractContextManager[Any | None]:
        """A read-only session for the dbt models' row previews, or None where previews would
        be billed (BigQuery) or there is nothing to read yet."""
        ...


# How an asset asks for the warehouse: `warehouse: WarehouseParam`.
WarehouseParam = dg.ResourceParam[Warehouse]


class Session(Protocol):
    """A warehouse session as the rooms use it: SQL in DuckDB's dialect, with bound parameters.

    A DuckDB connection or a `BigQueryConnection` (which translates the SQL). What the engines do
    differently beyond SQL is asked of `session.py`.
    """

    def execute(self, statement: str, params: Any = None, /) -> Any: ...

    def executemany(self, statement: str, rows: Any, /) -> Any: ...

    def register(self, name: str, data: Any, /) -> Any: ...

    def unregister(self, name: str, /) -> Any: ...


@contextlib.contextmanager
def in_transaction(con: Any) -> Iterator[Any]:
    """BEGIN ... COMMIT on a session already open; any exception rolls it back (both engines).

    The resources' `transaction()` is `connect()` plus this. Rooms use it as
    `session.transaction(con)` when they compute in temp tables first and open the transaction for
    the write only: DuckDB keeps a table created inside an open transaction in the transaction's
    local storage until the commit and scans it far slower there (measured at 6.5 M ledger rows:
    the reconciliation's row checks over its ledger copy took 20 s inside the transaction, 3.3 s
    outside). The write is as atomic either way: temp tables are the session's own.
    """
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
