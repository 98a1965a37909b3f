"""Writing a small analytics table to the warehouse, on DuckDB and on BigQuery alike.

The churn model writes its scores and its own description (weights, held-out figures) as tables
next to the dbt marts. DuckDB replaces a table from a registered Arrow table in the caller's
transaction; BigQuery allows no DDL inside a transaction, so (as the reconciliation does) the table
is made to match the columns first and its rows are replaced in one transaction.
"""

from __future__ import annotations

import pyarrow as pa

from credits_pipeline.warehouse.bigquery_warehouse import BigQueryConnection, replace_table_schema


def replace_table(con, schema: str, name: str, table: pa.Table) -> None:
    """Make `<schema>.<name>` hold exactly the rows of `table`."""
    staged = f"_analytics_out_{name}"
    if isinstance(con, BigQueryConnection):
        in_transaction = con.in_transaction
        if in_transaction:
            con.execute("commit")
        replace_table_schema(con, schema, name, table)
        con.register(staged, table)
        con.execute("begin transaction")
        try:
            con.execute(f"delete from {schema}.{name} where true", dialect="bigquery")
            con.execute(f"insert into {schema}.{name} select * from {staged}", dialect="bigquery")
        except BaseException:
            con.execute("rollback")
            raise
        con.execute("commit")
        con.unregister(staged)
        if in_transaction:
            con.execute("begin transaction")
        return
    con.execute(f"create schema if not exists {schema}")
    con.register(staged, table)
    try:
        con.execute(f"create or replace table {schema}.{name} as select * from {staged}")
    finally:
        con.unregister(staged)
