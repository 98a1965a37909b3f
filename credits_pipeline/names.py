"""Names the whole code location shares: asset-key prefixes, group names, check names.

Asset keys and group names are what data engineers search for in the Dagster UI and what other
modules (dbt sources, reconciliation, alerts, schedules) select by, so each is spelled once here.
"""

from __future__ import annotations

import dagster as dg

SOURCE_PREFIX = "syllaby_v2"
RAW_PREFIX = "raw"
CREDITS_PREFIX = "credits"
MARTS_PREFIX = "marts"
# The warehouse's schemas (DuckDB) or datasets (BigQuery): the asset-key prefixes above.
WAREHOUSE_SCHEMAS = (RAW_PREFIX, CREDITS_PREFIX, MARTS_PREFIX)
# The kind a room gives an asset it stores in the warehouse, without knowing the engine:
# definitions.py, which chooses the engine, replaces it with the resource's kind (duckdb/bigquery).
WAREHOUSE_KIND = "warehouse"

GROUP_SOURCE = "syllaby_v2"
GROUP_RAW = "raw"
GROUP_CREDITS = "credits"
GROUP_MARTS = "marts"
GROUP_RECONCILIATION = "reconciliation"

OWNER_DATA_ENGINEERING = "team:data-engineering"

VALIDATION_CHECK = "pandera_validation"
LEDGER_LAG_CHECK = "ledger_lag_vs_source"

OPEN_LEDGER_TABLE = "credit_histories__open"
QUARANTINE_SUFFIX = "__rejected"
CUTOFF_TABLE = "extraction_cutoff"  # the table's name; `raw_tables.CUTOFF_RELATION` is raw.<it>
# Scratch schema (DuckDB) or dataset (BigQuery) where extraction batches are staged before a swap.
STAGING_SCHEMA = "_staging"


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SOURCE_PREFIX, table])


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_PREFIX, table])


def credits_key(model: str) -> dg.AssetKey:
    return dg.AssetKey([CREDITS_PREFIX, model])


def marts_key(model: str) -> dg.AssetKey:
    return dg.AssetKey([MARTS_PREFIX, model])


def rejected_name(table: str) -> str:
    """The quarantine relation of a raw table: `raw.<table>__rejected` (extraction and rules)."""
    return f"{table}{QUARANTINE_SUFFIX}"
