"""What BigQuery charged for, and the guard rails on every query job: labels and a billing cap.

Why: BigQuery bills by bytes scanned, so a daily run that silently scans the whole history costs a
full run every day. Every query job the pipeline starts carries labels (which app, which asset,
which run) so the billing export can be grouped by them, and an optional `maximum_bytes_billed`
(`CREDITS_BIGQUERY_MAXIMUM_BYTES_BILLED`) so a runaway scan fails before it runs. Each asset
records the bytes its jobs processed and billed as numeric metadata, which Dagster plots over runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Metadata keys (numeric: Dagster plots them across materializations).
BYTES_PROCESSED_METADATA = "bigquery_bytes_processed"
BYTES_BILLED_METADATA = "bigquery_bytes_billed"
JOBS_METADATA = "bigquery_query_jobs"

APP_LABEL = "app"
APP_NAME = "credits_pipeline"
ASSET_LABEL = "asset"
RUN_LABEL = "run_id"
RUN_ID_CHARS = 8  # Dagster's short run id, as the UI shows it
# BigQuery's label rules: keys start with a lowercase letter; keys and values hold at most 63
# lowercase letters, digits, `_` and `-` (international letters too, which we never produce).
LABEL_MAX_CHARS = 63
_NOT_ALLOWED = re.compile(r"[^a-z0-9_-]")


def label_value(raw: str) -> str:
    """`raw` as a valid BigQuery label value: lowercase, other characters as `_`, ≤ 63 chars.

    Pure. 'ledger/user_balance_reconciliation' -> 'ledger_user_balance_reconciliation'.
    """
    return _NOT_ALLOWED.sub("_", raw.strip().lower())[:LABEL_MAX_CHARS]


def label_key(raw: str) -> str:
    """`raw` as a valid label key: a value that also starts with a lowercase letter (else `k_`)."""
    key = label_value(raw)
    if not key or not key[0].isalpha():
        key = f"k_{key}"[:LABEL_MAX_CHARS]
    return key


def job_labels(asset: str | None = None, run_id: str | None = None) -> dict[str, str]:
    """The labels of a query job: always the app, and the asset and short run id when known."""
    labels = {APP_LABEL: APP_NAME}
    if asset:
        labels[ASSET_LABEL] = label_value(asset)
    if run_id:
        labels[RUN_LABEL] = label_value(run_id[:RUN_ID_CHARS])
    return {label_key(k): v for k, v in labels.items()}


@dataclass
class JobStatistics:
    """Bytes processed and billed by the query jobs of one connection (None counts as 0)."""

    jobs: int = 0
    bytes_processed: int = 0
    bytes_billed: int = 0

    def add(self, processed: int | None, billed: int | None) -> None:
        self.jobs += 1
        self.bytes_processed += int(processed or 0)
        self.bytes_billed += int(billed or 0)

    def metadata(self) -> dict[str, int]:
        return {
            BYTES_PROCESSED_METADATA: self.bytes_processed,
            BYTES_BILLED_METADATA: self.bytes_billed,
            JOBS_METADATA: self.jobs,
        }


def current_asset_and_run() -> tuple[str | None, str | None]:
    """The asset (or op) and run of the Dagster step this code runs in; (None, None) outside one."""
    import dagster as dg

    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:  # not inside a step
        return None, None
    try:
        keys = context.selected_asset_keys if context.has_assets_def else set()
        if len(keys) == 1:
            name = next(iter(keys)).to_user_string()
        elif context.has_assets_def:
            name = context.assets_def.node_def.name
        else:
            name = context.op.name
    except (dg.DagsterInvariantViolationError, AttributeError):
        name = None
    return name, context.run_id


def dbt_statistics_by_node(run_results: dict) -> dict[str, JobStatistics]:
    """Bytes per dbt node from `run_results.json` (dbt-bigquery's `adapter_response`), pure.

    dagster-dbt does not surface `adapter_response`; dbt writes `bytes_processed`/`bytes_billed`
    there for every BigQuery statement it ran. Nodes without them (DuckDB) are left out.
    """
    out: dict[str, JobStatistics] = {}
    for result in run_results.get("results", []):
        response = result.get("adapter_response") or {}
        if "bytes_processed" not in response and "bytes_billed" not in response:
            continue
        stats = out.setdefault(result["unique_id"], JobStatistics())
        stats.add(response.get("bytes_processed"), response.get("bytes_billed"))
    return out


def with_dbt_statistics(events: list, run_results: dict) -> list:
    """dagster-dbt's events, each model's Output with its bytes processed/billed added
    (BigQuery)."""
    import dagster as dg

    by_node = dbt_statistics_by_node(run_results)
    if not by_node:
        return events
    out = []
    for event in events:
        unique_id = (
            getattr(event, "metadata", {}).get("unique_id")
            if isinstance(event, dg.Output)
            else None
        )
        node = getattr(unique_id, "value", unique_id)
        if node in by_node:
            extra = {k: dg.MetadataValue.int(v) for k, v in by_node[node].metadata().items()}
            event = event.with_metadata({**event.metadata, **extra})
        out.append(event)
    return out


def connection_usage_metadata(con: object) -> dict:
    """What a warehouse connection used, as asset metadata, whichever engine it is.

    A BigQuery connection: its jobs' bytes processed and billed (ints). A DuckDB connection: the
    memory limit and spill directory in force (read back from DuckDB).
    """
    import dagster as dg

    from credits_pipeline.warehouse import memory

    statistics = getattr(con, "statistics", None)
    if isinstance(statistics, JobStatistics):
        return {k: dg.MetadataValue.int(v) for k, v in statistics.metadata().items()}
    limit, spill = con.execute(  # type: ignore[attr-defined]
        "select current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone()
    return {
        memory.MEMORY_LIMIT_METADATA: dg.MetadataValue.text(str(limit)),
        memory.TEMP_DIRECTORY_METADATA: dg.MetadataValue.path(str(spill)),
    }


# The Dagster run a dbt subprocess belongs to, for the `run_id` label of its BigQuery jobs
# (`query-comment` in dbt_project.yml, `job-label: true`).
DBT_RUN_ID_VAR = "CREDITS_DAGSTER_RUN_ID"


def dbt_env() -> dict[str, str]:
    """Variables dbt's BigQuery jobs need for their labels: the short run id, when in a run."""
    _, run_id = current_asset_and_run()
    return {DBT_RUN_ID_VAR: label_value(run_id[:RUN_ID_CHARS]) if run_id else ""}
