"""BigQuery's staging steps for `raw_tables.Stager`: typed Arrow by load jobs, a partitioned ledger.

`raw_tables.Stager` holds the staging logic once, in DuckDB's SQL, for both engines; this module
answers the few steps BigQuery does differently (`raw_tables.StagingEngine`). A batch goes into
staging by a load job of typed Arrow (bounded memory, no row-by-row inserts), its timestamps marked
UTC so that BigQuery loads them as TIMESTAMP, not DATETIME. BigQuery has no `rowid`, so each staged
row is numbered as it arrives (`_seq`): the first copy of a duplicate id wins, as on DuckDB. The
ledger's tables are created partitioned by `_partition` and clustered by id before the generic ones
(`bigquery_warehouse.ensure_ledger_tables`), so the daily swap's delete touches only its days.
BigQuery allows no DDL on permanent tables inside a transaction: staging tables are dropped after
the stager's own commit, and inside a caller's transaction they are left to the staging dataset,
which expires forgotten tables after a day.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import CREDIT_HISTORIES, Table
from credits_pipeline.warehouse.bigquery_warehouse import BigQueryConnection, ensure_ledger_tables
from credits_pipeline.warehouse.raw_tables import ensure_raw_tables, raw_columns_ddl

# kind -> Arrow type of a load job: UTC-aware timestamps (column_types.py)
ARROW_TYPES = types_by_kind(lambda t: t.arrow_bigquery)
SEQ_COLUMN = "_seq"  # arrival order of a staged row: the first copy of a duplicate id wins
# How a staged timestamp is written in a quarantine row on BigQuery (to the second).
TIMESTAMP_TEXT_FORMAT = "%Y-%m-%d %H:%M:%S"


def typed_arrow(table: Table, clean: pa.Table | pd.DataFrame) -> pa.Table:
    """The batch's clean rows as Arrow at the table's column types, timestamps in UTC."""
    names = table.extracted_names
    if isinstance(clean, pd.DataFrame):
        frame = clean[names].astype(object).where(clean[names].notna(), None)
        arrays = [
            pa.array(
                frame[c.name].tolist(),
                type=ARROW_TYPES[c.kind] if c.kind != "ts" else pa.timestamp("us"),
            )
            for c in table.extracted_columns
        ]
        clean = pa.table(arrays, names=names)
    columns = []
    for c in table.extracted_columns:
        column = clean.column(c.name)
        if c.kind == "ts" and column.type.tz is None:
            column = pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC")
        columns.append(column.cast(ARROW_TYPES[c.kind]))
    return pa.table(columns, names=names)


class BigQueryStaging:
    """BigQuery's `raw_tables.StagingEngine`: load jobs into staging, rows numbered in `_seq`."""

    arrival_order = SEQ_COLUMN

    def __init__(self, con: BigQueryConnection):
        self.con = con
        self._seq = 0  # rows staged so far by this stager

    def ensure_raw_tables(self, table: Table) -> None:
        if table is CREDIT_HISTORIES:
            ensure_ledger_tables(self.con)
        ensure_raw_tables(self.con, table)

    def create_stage(self, stage: str, table: Table) -> None:
        self.con.execute(
            f"create or replace table {stage} ({raw_columns_ddl(table, False)}, "
            f"{SEQ_COLUMN} BIGINT)"
        )

    def append_clean(self, stage: str, table: Table, clean: pa.Table | pd.DataFrame) -> None:
        rows = typed_arrow(table, clean)
        seq = pa.array(np.arange(self._seq, self._seq + rows.num_rows, dtype=np.int64))
        self._seq += rows.num_rows
        self._load(stage, rows.append_column(SEQ_COLUMN, seq))

    def append_rejected(self, stage: str, rejected: pd.DataFrame) -> None:
        """Every value as its text (None stays NULL): the quarantine's columns are all text."""
        text = pa.table(
            {
                c: pa.array([None if v is None else str(v) for v in rejected[c]], pa.string())
                for c in rejected.columns
            }
        )
        self._load(stage, text)

    def _load(self, stage: str, rows: pa.Table) -> None:
        schema, name = stage.split(".", 1)
        self.con.load_arrow(rows, schema, name, append=True)

    def timestamp_text(self, column: str) -> str:
        return f"strftime({column}, '{TIMESTAMP_TEXT_FORMAT}')"

    def drop_stage(self, *relations: str) -> None:
        """Dropped after a commit; inside a transaction (no DDL there) left to expire."""
        if self.con.in_transaction:
            return
        for relation in relations:
            self.con.execute(f"drop table if exists {relation}")
