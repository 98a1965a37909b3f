"""The one function that chooses the warehouse engine, for the two edges that start the pipeline.

Why: `definitions.py` (the code location) and the CLI (which reads what the warehouse holds before
it starts a run) must never disagree on where the warehouse is. Both call `choose_warehouse()`;
every room below them receives the chosen resource (`interface.Warehouse`) and never asks which
engine runs.
"""

from __future__ import annotations

import os

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.warehouse.bigquery_warehouse import BigQueryWarehouse, warehouse_from_env
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse


def choose_warehouse() -> DuckDBWarehouse | BigQueryWarehouse:
    """BigQuery when `CREDITS_WAREHOUSE=bigquery`, else the DuckDB file; settings as EnvVars, so
    Dagster never displays them."""
    if settings.warehouse_kind() == "bigquery":
        return warehouse_from_env()
    if os.environ.get(settings.WAREHOUSE_PATH_VAR):
        return DuckDBWarehouse(path=dg.EnvVar(settings.WAREHOUSE_PATH_VAR))
    return DuckDBWarehouse()
