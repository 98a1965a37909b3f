"""What every room may ask of a warehouse session, whichever engine is behind it.

Why this module exists: the engine is chosen once, where `definitions.py` picks the warehouse
resource (`interface.Warehouse`); a room then holds a *session* — the DuckDB connection or the
`BigQueryConnection` that resource yields — and runs the pipeline's SQL on it, written once in
DuckDB's dialect (the BigQuery session translates it). Four things the engines do differently are
asked of this module instead of branching in the rooms: stream a query's result as Arrow record
batches, append a Parquet file to a table, replace a set of tables atomically, and stage a raw
table (one `raw_tables.Stager`, given the engine's few staging steps: `DuckDBStaging` or
`BigQueryStaging`). As dbt macros go through `adapter.dispatch`, the engine behind a session is
looked up here and nowhere else: no room imports a BigQuery or DuckDB warehouse module to ask
which engine runs.

What a transaction means, on both engines: the resource's `transaction()` yields a session inside
BEGIN ... COMMIT; an exception rolls it back. Rows written inside become visible together at the
commit, or not at all. DuckDB is fully transactional, DDL included. BigQuery allows no DDL on
permanent tables inside a transaction, so `replace_tables` commits the work done so far in the
caller's transaction (by convention only session temp tables and staging), makes each target table
match its new columns (DDL, outside any transaction), and opens the transaction in which the rows
of every target are replaced: the caller's commit commits them together, an exception rolls them
back together. What a failure between those steps can leave on BigQuery is an emptied table whose
columns changed; its rows are never half replaced. A stager's swap runs in a transaction of its
own or in the caller's, with the same statements on both engines: its staging tables are created
before any transaction, duplicates are moved with DML and a temp table (which BigQuery allows in a
transaction), and the staging tables are dropped after its own commit, or inside the caller's
transaction on DuckDB (on BigQuery they are left there to the staging dataset's expiry).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core.exceptions import NotFound

from credits_pipeline.warehouse import duckdb_warehouse
from credits_pipeline.warehouse.bigquery_raw_tables import BigQueryStaging
from credits_pipeline.warehouse.bigquery_warehouse import BigQueryConnection
from credits_pipeline.warehouse.interface import in_transaction as transaction  # noqa: F401
from credits_pipeline.warehouse.raw_tables import Stager, StagingEngine

if TYPE_CHECKING:
    from credits_pipeline.source.tables import Table

# What DuckDB and BigQuery raise for a relation that does not exist (yet).
MISSING_RELATION = (duckdb.CatalogException, NotFound)


def stream_batches(
    con: Any, statement: str, params: Mapping[str, object], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """A SELECT's rows as Arrow record batches of at most `batch_rows` rows, never all at once.

    Run nothing else on `con` until the stream is drained: on DuckDB another statement ends the
    stream early, with no error (the caller would see a prefix of the rows).
    """
    if isinstance(con, BigQueryConnection):
        yield from con.stream(statement, params, batch_rows)
        return
    yield from con.execute(statement, dict(params)).fetch_record_batch(batch_rows)


def insert_parquet(con: Any, relation: str, path: Path, schema: pa.Schema, batch_rows: int) -> None:
    """Append the rows of the Parquet file `path` to `relation` (same columns, in order).

    DuckDB reads the file itself (`read_parquet`, the path a bound parameter), under its memory
    limit and without an Arrow copy in the worker: at 6.5 M ledger rows that copy was ~0.5 GB
    above the limit. BigQuery loads it `batch_rows` rows at a time through `register`.
    """
    if isinstance(con, BigQueryConnection):
        batch = f"{relation.replace('.', '_')}_parquet"
        for rows in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            con.register(batch, pa.Table.from_batches([rows], schema=schema))
            con.execute(f"insert into {relation} select * from {batch}")
            con.unregister(batch)
        return
    con.execute(f"insert into {relation} select * from read_parquet(?)", [str(path)])


def replace_tables(con: Any, tables: Mapping[str, pa.Table | str]) -> None:
    """Make each `<schema>.<name>` key hold exactly the rows of its value, all in one transaction.

    A value is an Arrow table or the name of a relation this session can read (a temp table of
    the run). Call it inside the resource's `transaction()`: the module docstring says what the
    transaction means on each engine. Outside one, the replacement commits on its own.
    """
    if isinstance(con, BigQueryConnection):
        con.replace_tables(tables)
    else:
        duckdb_warehouse.replace_tables(con, tables)


def stager(con: Any, table: Table, target: str | None = None) -> Stager:
    """A `raw_tables.Stager` of `table` (into `target`) on `con`, with its engine's steps."""
    staging: StagingEngine
    if isinstance(con, BigQueryConnection):
        staging = BigQueryStaging(con)
    else:
        staging = duckdb_warehouse.DuckDBStaging(con)
    return Stager(con, staging, table, target)
