"""How the ledger's tables are laid out on BigQuery: partitioned by day, clustered by id.

The daily swap deletes and inserts one day: with day partitions it rewrites that partition only,
and the duplicate-id check reads only the id blocks of the staged range. A ledger table created
first by anything else (the generic `create table if not exists` of `raw_tables.ensure_raw_tables`)
would stay unpartitioned, so a writing connection creates these before anything else runs
(`bigquery_warehouse.ensure_ledger_tables`). The layout lives here, below both the connection and
`bigquery_raw_tables`, so that neither has to import the other to create the ledger.
"""

from credits_pipeline.names import OPEN_LEDGER_TABLE
from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import CREDIT_HISTORIES, Table
from credits_pipeline.warehouse.raw_tables import PARTITION_COLUMN

BIGQUERY_TYPES = types_by_kind(lambda t: t.bigquery)  # kind -> BigQuery type (column_types.py)
LEDGER_CLUSTER_COLUMNS = ("id",)
LEDGER_TABLES = (CREDIT_HISTORIES.name, OPEN_LEDGER_TABLE)


def columns_ddl(table: Table, with_partition: bool) -> str:
    """The table's contract columns at BigQuery's types (and the ledger's `_partition` date)."""
    cols = [f"{c.name} {BIGQUERY_TYPES[c.kind]}" for c in table.extracted_columns]
    if with_partition:
        cols.append(f"{PARTITION_COLUMN} DATE")
    return ", ".join(cols)


def ledger_tables_ddl() -> list[str]:
    """`create table if not exists` of each ledger table, partitioned and clustered (BigQuery)."""
    return [
        f"create table if not exists raw.{name} ({columns_ddl(CREDIT_HISTORIES, True)}) "
        f"partition by {PARTITION_COLUMN} cluster by {', '.join(LEDGER_CLUSTER_COLUMNS)}"
        for name in LEDGER_TABLES
    ]
