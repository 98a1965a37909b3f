"""What each raw column means, read from the one place it is written: dbt's sources YAML.

The raw tables are documented twice over in any project like this one — for dbt (the `raw` source
in `dbt_transform/models/staging/_sources.yml`, which dbt docs and the staging models read) and for
Dagster (the raw assets' `dagster/column_schema`, which the asset page shows). Writing the business
meaning in both would let them drift, so it is written once, in the YAML, and this module reads it
to build the raw assets' column schemas: the YAML's description, the warehouse type and the
source's nullability from the contract (`source/tables.py`). A column the YAML does not describe
gets no description here; a test holds every extracted column to having one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import yaml

from credits_pipeline import settings
from credits_pipeline.names import RAW_PREFIX
from credits_pipeline.source.tables import Table
from credits_pipeline.warehouse.raw_tables import DUCKDB_TYPES, PARTITION_COLUMN

SOURCES_YAML = settings.DBT_PROJECT_DIR / "models" / "staging" / "_sources.yml"
PARTITION_TYPE = "DATE"


def raw_column_descriptions(path: Path = SOURCES_YAML) -> Mapping[str, Mapping[str, str]]:
    """`{relation: {column: description}}` of the `raw` source; whitespace folded to one line."""
    return source_column_descriptions(RAW_PREFIX, path)


@functools.cache
def source_column_descriptions(
    source_name: str, path: Path = SOURCES_YAML
) -> Mapping[str, Mapping[str, str]]:
    """`{relation: {column: description}}` of one dbt source of the YAML (the pipeline writes
    every relation a source declares, so the YAML's words describe its assets too)."""
    spec = yaml.safe_load(path.read_text()) or {}
    [source] = [s for s in spec.get("sources") or [] if s.get("name") == source_name]
    return {
        table["name"]: {
            column["name"]: " ".join(str(column.get("description") or "").split())
            for column in table.get("columns") or []
        }
        for table in source.get("tables") or []
    }


def raw_table_schema(
    table: Table, relation: str | None = None, with_partition: bool = False
) -> dg.TableSchema:
    """The column schema of `raw.<relation>` (default: the table's own name) holding `table`'s
    extracted columns: description from the YAML, DuckDB type and nullability from the contract."""
    docs = raw_column_descriptions().get(relation or table.name, {})
    columns = [
        dg.TableColumn(
            c.name,
            DUCKDB_TYPES[c.kind],
            description=docs.get(c.name) or None,
            constraints=dg.TableColumnConstraints(nullable=c.nullable),
        )
        for c in table.extracted_columns
    ]
    if with_partition:
        columns.append(
            dg.TableColumn(
                PARTITION_COLUMN, PARTITION_TYPE, description=docs.get(PARTITION_COLUMN) or None
            )
        )
    return dg.TableSchema(columns=columns)
