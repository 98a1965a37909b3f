"""The reconciliation as Dagster assets: `marts/user_balance_reconciliation` and `marts/ledger_anomalies`.

Both relations come from one pass over the ledger, so they are one `@dg.multi_asset` that always
materializes both, whatever it finds: they are the report, and a report must never be hidden by
the problems it reports (contract section 4). The wiring stays thin: expose the warehouse under
the reconciliation's input names, call `reconcile()`, replace both tables in one transaction, and
emit materialization metadata plus the 13 rule checks from the same result. (The compute
function's `context` is left unannotated: under `from __future__ import annotations` Dagster cannot
resolve the annotation of a function defined inside a builder.)
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.checks import (
    ANOMALIES_KEY,
    RECONCILIATION_KEY,
    check_results,
    reconciliation_check_specs,
)
from credits_pipeline.ledger.inputs import (
    create_warehouse_inputs,
    drop_warehouse_inputs,
    read_cutoff,
)
from credits_pipeline.ledger.reconcile import (
    ReconciliationResult,
    drop_working_tables,
    reconcile,
    write_reconciliation,
)
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse

ASSET_NAME = "ledger_reconciliation"
KINDS = {"duckdb", "python"}
UPSTREAM_KEYS: tuple[dg.AssetKey, ...] = (
    dg.AssetKey(["credits", "credit_histories"]),
    dg.AssetKey(["credits", "credit_events"]),
    dg.AssetKey(["raw", "users"]),
    dg.AssetKey(["raw", "facelesses"]),
    dg.AssetKey(["raw", "videos"]),
    dg.AssetKey(["raw", "real_clones"]),
    dg.AssetKey(["raw", "speeches"]),
    dg.AssetKey(["raw", "extraction_cutoff"]),
)


def summary_markdown(result: ReconciliationResult) -> str:
    """A human summary of a run: users by status and a line per rule."""
    s = result.status_counts
    lines = [
        f"**Ledger reconciliation** as of {result.cutoff_at.isoformat()}Z over "
        f"{result.ledger_rows:,} ledger rows and {result.reconciliation.num_rows:,} users.",
        "",
        f"Users: {s.get(rc.STATUS_OK, 0):,} ok, {s.get(rc.STATUS_DRIFT, 0):,} drift, "
        f"{s.get(rc.STATUS_BROKEN_CHAIN, 0):,} broken chain.",
        "",
        "| rule | severity | violations | credits involved |",
        "|---|---|---:|---:|",
    ]
    for rule in rc.RULES:
        summary = result.summaries[rule.code]
        lines.append(
            f"| `{rule.code}` | {rule.severity} | {summary.count:,} | {summary.credits:,} |"
        )
    return "\n".join(lines)


def _metadata(result: ReconciliationResult) -> dict[str, dg.RawMetadataValue]:
    meta: dict[str, dg.RawMetadataValue] = {
        "detected_at": dg.MetadataValue.text(result.cutoff_at.isoformat() + "Z"),
        "ledger_rows": dg.MetadataValue.int(result.ledger_rows),
        "users_ok": dg.MetadataValue.int(result.status_counts.get(rc.STATUS_OK, 0)),
        "users_drift": dg.MetadataValue.int(result.status_counts.get(rc.STATUS_DRIFT, 0)),
        "users_broken_chain": dg.MetadataValue.int(
            result.status_counts.get(rc.STATUS_BROKEN_CHAIN, 0)
        ),
        "summary": dg.MetadataValue.md(summary_markdown(result)),
    }
    for code, summary in result.summaries.items():
        meta[f"violations/{code}"] = dg.MetadataValue.int(summary.count)
        meta[f"credits/{code}"] = dg.MetadataValue.int(summary.credits)
    return meta


def build_reconciliation_assets(blocking: bool = False) -> dg.AssetsDefinition:
    """The reconciliation multi-asset with its 13 checks.

    `blocking=True` makes the ERROR (money) checks blocking: a failed one stops assets downstream
    of the checked relation (e.g. the revenue mart) — after both relations are written and
    materialized, so the report itself is never held back. Build it with
    `build_reconciliation_assets(blocking=checks.blocking_from_settings())` to follow
    CREDITS_BLOCK_REVENUE_ON_ERROR.
    """

    @dg.multi_asset(
        name=ASSET_NAME,
        specs=[
            dg.AssetSpec(
                RECONCILIATION_KEY,
                deps=list(UPSTREAM_KEYS),
                group_name=rc.GROUP_NAME,
                kinds=set(KINDS),
                description="One row per user: the replayed pools next to the stored ones, "
                "chain breaks, breakage and write-offs, and a status (ok / drift / broken_chain).",
            ),
            dg.AssetSpec(
                ANOMALIES_KEY,
                deps=list(UPSTREAM_KEYS),
                group_name=rc.GROUP_NAME,
                kinds=set(KINDS),
                description="One row per violation of the 13 ledger rules, as of the extraction "
                "cut-off.",
            ),
        ],
        check_specs=reconciliation_check_specs(blocking=blocking),
    )
    def ledger_reconciliation(
        context, warehouse: DuckDBWarehouse  # context unannotated: see the module docstring
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        with warehouse.transaction() as con:
            create_warehouse_inputs(con)
            cutoff_at = read_cutoff(con)
            result = reconcile(con, cutoff_at)
            write_reconciliation(con, result)
            drop_working_tables(con)
            drop_warehouse_inputs(con)
        context.log.info(
            "reconciled %s ledger rows as of %s: %s",
            result.ledger_rows,
            result.cutoff_at.isoformat(),
            ", ".join(f"{c}={s.count}" for c, s in result.summaries.items() if s.count),
        )
        meta = _metadata(result)
        yield dg.MaterializeResult(
            asset_key=RECONCILIATION_KEY,
            metadata={**meta, "dagster/row_count": result.reconciliation.num_rows},
        )
        yield dg.MaterializeResult(
            asset_key=ANOMALIES_KEY,
            metadata={**meta, "dagster/row_count": result.anomalies.num_rows},
        )
        yield from check_results(result)

    return ledger_reconciliation


reconciliation_multi_asset = build_reconciliation_assets(blocking=False)
reconciliation_assets: list[dg.AssetsDefinition] = [reconciliation_multi_asset]
