"""The extraction loop every raw asset shares: read a batch, validate it, stage it, account for it.

Each extraction asset differs only in *which* rows it reads (a day range, a watermark, a snapshot)
and *how* it swaps them in (replace partitions, merge by id, replace whole). The part in between —
streaming batches through the pandera model into staging, counting what was loaded, quarantined or
merely warned about, and turning that into metadata and an asset-check result a data engineer can
act on — lives here once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from credits_pipeline.extract.column_docs import raw_table_schema
from credits_pipeline.names import RAW_PREFIX, VALIDATION_CHECK
from credits_pipeline.source.tables import Table
from credits_pipeline.validation.outcome import ValidatedBatch
from credits_pipeline.validation.quarantine import REASON_COLUMN, validate_batch
from credits_pipeline.warehouse.cost import connection_usage_metadata
from credits_pipeline.warehouse.interface import Session
from credits_pipeline.warehouse.raw_tables import (
    Stager,
    newest_rows_markdown,
    rejected_name,
)

MAX_REJECTED_EXAMPLES = 10

# Metadata keys of every extraction's materialization, read back by the CLI's summary.
ROWS_READ_METADATA = "rows_read"
ROWS_LOADED_METADATA = "rows_loaded"
ROWS_QUARANTINED_METADATA = "rows_quarantined"
QUARANTINE_RELATION_METADATA = "quarantine_relation"
CUTOFF_METADATA = "extraction_cutoff"  # the consistent cut a materialization read at
COLUMN_SCHEMA_METADATA = "dagster/column_schema"


@dataclass
class ExtractionTally:
    """What one extraction read and where every row went."""

    table: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    domain_warnings: Counter = field(default_factory=Counter)
    rejected_examples: list[str] = field(default_factory=list)


def stage_batches(
    stager: Stager,
    batches: Iterable[pd.DataFrame],
    label: str | None,
    on_batch: Callable[[ValidatedBatch], None] | None = None,
) -> ExtractionTally:
    """Validate and stage every batch; return the tally (rows read = loaded + rejected).

    `on_batch` sees each validated batch as it is staged (the ledger's read fingerprints,
    `extract/read_fingerprint.py`)."""
    tally = ExtractionTally(stager.table.name)
    for frame in batches:
        batch = validate_batch(stager.table.name, frame)
        if on_batch is not None:
            on_batch(batch)
        stager.append(batch, label)
        tally.rows_read += batch.rows_in
        tally.domain_warnings.update(batch.domain_warnings)
        for row_id, reason in zip(
            batch.rejected["id"], batch.rejected[REASON_COLUMN], strict=False
        ):
            if len(tally.rejected_examples) < MAX_REJECTED_EXAMPLES:
                tally.rejected_examples.append(f"id {row_id}: {reason}")
    return tally


def finish_tally(tally: ExtractionTally, stager: Stager) -> ExtractionTally:
    """Take the final loaded/rejected counts from the stager (duplicates move rows at swap time)."""
    tally.rows_loaded = stager.stats.loaded
    tally.rows_rejected = stager.stats.rejected
    return tally


def extraction_metadata(
    tally: ExtractionTally,
    table: Table,
    cutoff: dt.datetime,
    con: Session,
    relation: str,
    with_partition: bool = False,
    extra: dict | None = None,
) -> dict:
    """Row counts, cut-off, column schema, quarantine and a preview of the newest rows."""
    total = con.execute(f"select count(*) from {relation}").fetchone()[0]
    meta = {
        "dagster/row_count": dg.MetadataValue.int(int(total)),
        ROWS_READ_METADATA: dg.MetadataValue.int(tally.rows_read),
        ROWS_LOADED_METADATA: dg.MetadataValue.int(tally.rows_loaded),
        ROWS_QUARANTINED_METADATA: dg.MetadataValue.int(tally.rows_rejected),
        QUARANTINE_RELATION_METADATA: dg.MetadataValue.text(f"raw.{rejected_name(table.name)}"),
        CUTOFF_METADATA: dg.MetadataValue.timestamp(cutoff.replace(tzinfo=dt.UTC)),
        COLUMN_SCHEMA_METADATA: raw_table_schema(
            table, relation.removeprefix(f"{RAW_PREFIX}."), with_partition
        ),
        "preview": dg.MetadataValue.md(newest_rows_markdown(con, relation, "id")),
    }
    # BigQuery: bytes processed/billed by this asset's jobs; DuckDB: its memory limit, spill dir
    meta.update(connection_usage_metadata(con))
    meta.update(extra or {})
    return meta


def validation_check_result(tally: ExtractionTally, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    """Passes when nothing was quarantined; domain warnings are reported but do not fail it."""
    warnings = (
        "\n".join(f"- {k}: {v} row(s)" for k, v in sorted(tally.domain_warnings.items())) or "none"
    )
    examples = "\n".join(f"- {e}" for e in tally.rejected_examples) or "none"
    description = (
        f"syllaby_v2.{tally.table}: {tally.rows_loaded} row(s) loaded, {tally.rows_rejected} "
        f"quarantined in raw.{rejected_name(tally.table)}."
    )
    if tally.rows_rejected:
        description += f" First rows at fault: {'; '.join(tally.rejected_examples[:3])}"
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=VALIDATION_CHECK,
        passed=tally.rows_rejected == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            ROWS_READ_METADATA: dg.MetadataValue.int(tally.rows_read),
            ROWS_LOADED_METADATA: dg.MetadataValue.int(tally.rows_loaded),
            ROWS_QUARANTINED_METADATA: dg.MetadataValue.int(tally.rows_rejected),
            "quarantined_examples": dg.MetadataValue.md(examples),
            "domain_warnings": dg.MetadataValue.md(warnings),
        },
    )


def validation_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=VALIDATION_CHECK,
        asset=asset_key,
        description="Pandera validation: rows the warehouse cannot hold are quarantined with a "
        "reason; fails (WARN) when any row was quarantined. Domain oddities load and are "
        "counted.",
    )
