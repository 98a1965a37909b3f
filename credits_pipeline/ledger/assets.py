"""The reconciliation as Dagster assets: `marts/user_balance_reconciliation` and
`marts/ledger_anomalies`.

Both relations come from one pass over the ledger, so they are one `@dg.multi_asset` that always
materializes both, whatever it finds: they are the report, and a report must never be hidden by
the problems it reports (contract section 4). The wiring stays thin: expose the warehouse under
the reconciliation's input names, call `reconcile()`, replace both tables in one transaction
straight from the relations it computed, and emit materialization metadata plus the 13 rule checks
from the same result and from bounded reads of those relations (the reports never cross into
Python whole). The metadata tells
the run's story in the UI (`report.py`): users ok / drifting / broken, credits at stake per rule,
every non-ok user (the 50 with most credits at stake first, and the total), both column schemas,
previews sorted by credits at stake, and a chart of weekly anomalies per rule over the last 12
months (weekly totals inline, per rule behind a click). When rules fail and no alert channel is
configured, the summary (and the run summary, through `no_alert_channel`) says that nobody will
be told.
The replay resumes from the state the previous run stored (`replay_state.py`); the metadata says
whether it did (`replay_mode`, `replay_reason`, `replayed_rows`).
"""

import time
from collections.abc import Iterator

import dagster as dg

from credits_pipeline import check_metadata as cm
from credits_pipeline import settings
from credits_pipeline.alerts.channels import ALL_CHANNEL_VARS, channels_from_env
from credits_pipeline.extract.column_docs import source_column_descriptions
from credits_pipeline.ledger import report
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.checks import (
    ANOMALIES_KEY,
    GATED_RULES,
    RECONCILIATION_KEY,
    ROW_POOLS_KEY,
    UNGATED_RULES,
    check_results,
    reconciliation_check_specs,
    rule_check_results,
)
from credits_pipeline.ledger.inputs import (
    create_warehouse_inputs,
    drop_warehouse_inputs,
    read_cutoff,
)
from credits_pipeline.ledger.reconcile import (
    REPORT_RELATIONS,
    ROW_POOLS_ARROW_SCHEMA,
    ReconciliationResult,
    drop_working_tables,
    naive_utc,
    reconcile,
    rule_summaries,
)
from credits_pipeline.ledger.store import write_reconciliation
from credits_pipeline.names import (
    CUTOFF_TABLE,
    OWNER_DATA_ENGINEERING,
    WAREHOUSE_KIND,
    credits_key,
    raw_key,
)
from credits_pipeline.source.tables import FACELESSES, REAL_CLONES, SPEECHES, USERS, VIDEOS
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.interface import WarehouseParam

ASSET_NAME = "ledger_reconciliation"
COMPUTE_KIND = "python"  # the replay (numba) and the rules run in Python over the warehouse
RECONCILIATION_DESCRIPTION = (
    "One row per user in `users`, as of the run's extraction cut-off: the subscription and "
    "purchased pools the ledger replay ends with (`ledger_*_balance`) next to the ones the "
    "application stores (`recorded_*_balance`: `remaining_credit_amount`, `extra_credits`), "
    "`drift` (recorded minus ledger, both pools summed), `chain_breaks` and the first one, "
    "`forfeited_credits` (breakage from monthly resets), `written_off_credits` (overdrafts), and a "
    "`status`: `broken_chain`, `drift` or `ok`. Recomputed whole on every run; checks never hold "
    "it back. Checks: `ledger_rule_chain_break`, `ledger_rule_balance_drift`."
)
ROW_POOLS_DESCRIPTION = (
    "Both credit pools around every ledger row, from the reconciliation's replay (contract "
    "section 2): `user_row_number`, `subscription_before`, `purchased_before`, "
    "`subscription_after`, `purchased_after`, `forfeited_credits`, `written_off_credits`. The one "
    "replay: dbt's `credits.int_credit_replay` and every balance mart read it, so a mart's "
    "balance is the report's. Maintained with the replay state: a resumed run replaces the rows "
    "of the users it replayed and keeps the others, in the same transaction as both reports."
)
ANOMALIES_DESCRIPTION = (
    "One row per violation of the 13 ledger rules (contract section 3), as of the run's extraction "
    "cut-off: `rule`, `user_id`, `credit_history_id` (NULL for rules about a user or a content "
    "row), `entity_type` / `entity_id`, `expected`, `actual`, `detail` (a sentence for a human), "
    "`credits`, `detected_at` (the cut-off, so a re-run on unchanged data gives identical "
    "rows) and `first_detected_at` (the cut-off of the first run that reported the violation, "
    "kept across runs: since when it is known). Alerts, dashboards and acceptance checks read it; "
    "one `ledger_rule_*` check per rule."
)
WEEKLY_CHART_METADATA_KEY = "anomalies_per_week"
FAILING_RULES_METADATA_KEY = "failing_rules"
TREND_METADATA_KEY = f"anomalies_by_rule_last_{report.TREND_WEEKS}_weeks"
NON_OK_METADATA_KEY = "non_ok_users"
NON_OK_TOTAL_METADATA_KEY = "non_ok_users_total"
UPSTREAM_KEYS: tuple[dg.AssetKey, ...] = (
    credits_key("credit_histories"),
    credits_key("credit_events"),
    *(raw_key(table.name) for table in (USERS, FACELESSES, VIDEOS, REAL_CLONES, SPEECHES)),
    raw_key(CUTOFF_TABLE),
)


def no_channel_line(result: ReconciliationResult, channels_configured: bool) -> str | None:
    """A loud line when rules fail and no alert channel would tell anyone (None otherwise)."""
    failing = [code for code, summary in result.summaries.items() if not summary.passed]
    if not failing or channels_configured:
        return None
    return (
        f"**No alert channel is configured: {len(failing)} failing rule(s) alert nobody** "
        f"(set `{ALL_CHANNEL_VARS[0]}` or another alert variable)."
    )


def summary_markdown(result: ReconciliationResult, channels_configured: bool = True) -> str:
    """A human summary of a run: users by status, credits at stake, how many rules fail.

    Short on purpose: the UI shows Markdown under 1,000 characters inline. The failing rules are
    the next entry (`failing_rules`), every rule's numbers entries of their own.
    """
    s = result.status_counts
    at_stake = {
        severity: sum(result.summaries[r.code].credits for r in rc.RULES if r.severity == severity)
        for severity in ("ERROR", "WARN")
    }
    lines = [
        f"**Ledger reconciliation** as of {result.cutoff_at.isoformat()}Z over "
        f"{result.ledger_rows:,} ledger rows and {result.users:,} users.",
        "",
        f"Replay: {result.replay_mode}, {result.replayed_rows:,} rows replayed "
        f"({result.replay_reason}).",
        "",
        f"Users: {s.get(rc.STATUS_OK, 0):,} ok, {s.get(rc.STATUS_DRIFT, 0):,} drifting, "
        f"{s.get(rc.STATUS_BROKEN_CHAIN, 0):,} broken chain.",
        "",
        f"Credits at stake: {at_stake['ERROR']:,} in ERROR (money) rules, "
        f"{at_stake['WARN']:,} in WARN (hygiene) rules.",
    ]
    failing = sum(1 for summary in result.summaries.values() if not summary.passed)
    lines += [
        "",
        f"Rules: {failing} failing (`{FAILING_RULES_METADATA_KEY}`), "
        f"{len(rc.RULES) - failing} passing.",
    ]
    warning = no_channel_line(result, channels_configured)
    if warning:
        lines += ["", warning]
    return "\n".join(lines)


def failing_rules_markdown(result: ReconciliationResult) -> str:
    """The failing rules, most credits at stake first (every rule's numbers are metadata too)."""
    lines = ["| rule | severity | violations | credits at stake |", "|---|---|---:|---:|"]
    failing = sorted(
        (r for r in rc.RULES if not result.summaries[r.code].passed),
        key=lambda r: (-result.summaries[r.code].credits, rc.RULE_CODES.index(r.code)),
    )
    for rule in failing:
        summary = result.summaries[rule.code]
        lines.append(
            f"| `{rule.code}` | {rule.severity} | {summary.count:,} | {summary.credits:,} |"
        )
    if not failing:
        return "Every rule passes."
    return "\n".join(lines)


def reconciliation_kinds() -> set[str]:
    """The warehouse the reports land in (its engine's kind: definitions.py) and how they are
    computed."""
    return {WAREHOUSE_KIND, COMPUTE_KIND}


STAGE_SECONDS_METADATA_KEY = "stage_seconds"


def stage_seconds(
    result: ReconciliationResult, inputs: float, write: float, total: float
) -> dict[str, float]:
    """Where the step's time went, in seconds: the inputs' copy, each stage of `reconcile()`
    (`ReconciliationResult.timings`), the write, and the step as a whole.

    Why: the daily run's cost is judged per stage (which one still scans the whole ledger), and
    the step's duration alone cannot say.
    """
    return {
        "inputs": round(inputs, 3),
        **{name: round(seconds, 3) for name, seconds in result.timings.items()},
        "write": round(write, 3),
        "total": round(total, 3),
    }


def _metadata(result: ReconciliationResult) -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {
        "detected_at": dg.MetadataValue.text(result.cutoff_at.isoformat() + "Z"),
        "ledger_rows": dg.MetadataValue.int(result.ledger_rows),
        "replay_mode": dg.MetadataValue.text(result.replay_mode),
        "replay_reason": dg.MetadataValue.text(result.replay_reason),
        "replayed_rows": dg.MetadataValue.int(result.replayed_rows),
        "users_replayed_again": dg.MetadataValue.int(result.dirty_users),
        "rules_mode": dg.MetadataValue.text(result.rules_mode),
        "rules_reason": dg.MetadataValue.text(result.rules_reason),
        "users_rules_evaluated_again": dg.MetadataValue.int(result.rule_scope_users),
        "users_ok": dg.MetadataValue.int(result.status_counts.get(rc.STATUS_OK, 0)),
        "users_drift": dg.MetadataValue.int(result.status_counts.get(rc.STATUS_DRIFT, 0)),
        "users_broken_chain": dg.MetadataValue.int(
            result.status_counts.get(rc.STATUS_BROKEN_CHAIN, 0)
        ),
    }
    for code, summary in result.summaries.items():
        meta[f"violations/{code}"] = dg.MetadataValue.int(summary.count)
        meta[f"credits/{code}"] = dg.MetadataValue.int(summary.credits)
    return meta


GATE_NAME = "ledger_money_checks"


def build_money_check_gate() -> dg.AssetChecksDefinition:
    """The money rules' checks, blocking, evaluated in a step of their own after the reports.

    Why a step of its own: a failed blocking check fails the step that evaluates it, and Dagster
    skips everything downstream of that step. In the reconciliation's step that would hold back
    the marts too (they read the replay's pools, `credits/ledger_row_pools`); here it holds back
    only what reads the reports (the revenue mart). The figures are read from the stored anomalies
    with the reconciliation's own queries (`reconcile.rule_summaries`), so they are the report's.
    """

    @dg.multi_asset_check(
        name=GATE_NAME,
        specs=reconciliation_check_specs(blocking=True, rules=GATED_RULES),
    )
    def ledger_money_checks(warehouse: WarehouseParam) -> Iterator[dg.AssetCheckResult]:
        with warehouse.connect(read_only=True) as con:
            summaries, new = rule_summaries(con, f"{rc.MARTS_SCHEMA}.{rc.ANOMALIES_TABLE}")
            cutoff_at = naive_utc(read_cutoff(con))
        yield from rule_check_results(summaries, new, cutoff_at, GATED_RULES)

    return ledger_money_checks


def reconciliation_gates(blocking: bool = False) -> list[dg.AssetChecksDefinition]:
    """The checks `definitions.py` registers beside `build_reconciliation_assets(blocking)`: with
    `blocking` (CREDITS_BLOCK_REVENUE_ON_ERROR) the gate that evaluates the money checks, else
    none (the multi-asset evaluates all 13)."""
    return [build_money_check_gate()] if blocking else []


def build_reconciliation_assets(blocking: bool = False) -> dg.AssetsDefinition:
    """The reconciliation multi-asset with its checks: all 13, or with `blocking` the 9 that are
    not about money (the money checks then belong to `build_money_check_gate`, blocking).

    A blocking money check stops what is downstream of the reports (e.g. the revenue mart) —
    after both relations and the replay's pools are written and materialized, so neither the
    report nor the marts built on the pools is held back. Build it with
    `blocking=checks.blocking_from_settings()`, and register `reconciliation_gates(blocking)` with
    it, to follow CREDITS_BLOCK_REVENUE_ON_ERROR.
    """
    owned_rules = UNGATED_RULES if blocking else rc.RULES

    @dg.multi_asset(
        name=ASSET_NAME,
        specs=[
            dg.AssetSpec(
                key,
                deps=list(UPSTREAM_KEYS),
                group_name=rc.GROUP_NAME,
                kinds=reconciliation_kinds(),
                owners=[OWNER_DATA_ENGINEERING],
                description=description,
            )
            for key, description in (
                (RECONCILIATION_KEY, RECONCILIATION_DESCRIPTION),
                (ANOMALIES_KEY, ANOMALIES_DESCRIPTION),
                (ROW_POOLS_KEY, ROW_POOLS_DESCRIPTION),
            )
        ],
        check_specs=reconciliation_check_specs(rules=owned_rules),
    )
    def ledger_reconciliation(
        context: dg.AssetExecutionContext, warehouse: WarehouseParam
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        started = time.perf_counter()
        # computed in the session's temp tables outside any transaction, written in one
        # (`session.transaction` says why): nothing of the warehouse changes before the write
        with warehouse.connect() as con:
            create_warehouse_inputs(con)
            cutoff_at = read_cutoff(con)
            inputs_seconds = time.perf_counter() - started
            result = reconcile(
                con,
                cutoff_at,
                keep_state=True,
                force_full_replay=settings.replay_forced_full(),
                batch_rows=settings.replay_batch_rows(),
            )
            reconciled = time.perf_counter()
            with session.transaction(con):
                write_reconciliation(con, result)
            write_seconds = time.perf_counter() - reconciled
            # bounded reads of the relations just stored, while they and the ledger input are
            # still on the session: the anomalies' days, the newest ones, the top non-ok users
            reconciliation_relation = REPORT_RELATIONS[rc.RECONCILIATION_TABLE]
            anomalies_relation = REPORT_RELATIONS[rc.ANOMALIES_TABLE]
            trend = report.anomaly_trend(con, anomalies_relation, result.cutoff_at)
            anomalies_preview = report.anomalies_preview(con, anomalies_relation)
            users = report.non_ok_users(con, reconciliation_relation, anomalies_relation)
            drop_working_tables(con)
            drop_warehouse_inputs(con)
            # DuckDB: the memory limit and spill dir in force; BigQuery: bytes processed/billed
            usage = warehouse.usage_metadata(con)
        stages = stage_seconds(result, inputs_seconds, write_seconds, time.perf_counter() - started)
        context.log.info(
            "reconciled %s ledger rows as of %s (replay %s, %s rows replayed: %s): %s",
            result.ledger_rows,
            result.cutoff_at.isoformat(),
            result.replay_mode,
            result.replayed_rows,
            result.replay_reason,
            ", ".join(f"{c}={s.count}" for c, s in result.summaries.items() if s.count),
        )
        context.log.info("reconciliation stages (s): %s", stages)
        # the story first (the UI lists metadata in this order), the per-rule numbers after
        meta = _metadata(result)
        reconciliation_preview = report.reconciliation_preview(users)
        channels_configured = bool(channels_from_env())
        warning = no_channel_line(result, channels_configured)
        if warning:
            context.log.warning(warning)
        story = {
            "summary": dg.MetadataValue.md(summary_markdown(result, channels_configured)),
            FAILING_RULES_METADATA_KEY: dg.MetadataValue.md(failing_rules_markdown(result)),
            WEEKLY_CHART_METADATA_KEY: dg.MetadataValue.md(report.mini_trend_markdown(trend)),
            NON_OK_METADATA_KEY: dg.MetadataValue.md(report.non_ok_markdown(users)),
            NON_OK_TOTAL_METADATA_KEY: dg.MetadataValue.int(users.total),
            TREND_METADATA_KEY: dg.MetadataValue.md(report.trend_markdown(trend)),
        }
        if warning:  # for the run summary (run_summary.py), as plain text
            story[cm.NO_ALERT_CHANNEL] = dg.MetadataValue.text(warning.replace("**", ""))
        yield dg.MaterializeResult(
            asset_key=RECONCILIATION_KEY,
            metadata={
                **story,
                "preview": dg.MetadataValue.md(reconciliation_preview),
                "dagster/row_count": result.users,
                "dagster/column_schema": report.table_schema(
                    result.reconciliation_schema, report.RECONCILIATION_COLUMN_DOCS
                ),
                **meta,
                **usage,
                STAGE_SECONDS_METADATA_KEY: dg.MetadataValue.json(stages),
            },
        )
        yield dg.MaterializeResult(
            asset_key=ANOMALIES_KEY,
            metadata={
                **story,
                "preview": dg.MetadataValue.md(anomalies_preview),
                "dagster/row_count": result.anomaly_rows,
                "dagster/column_schema": report.table_schema(
                    result.anomalies_schema, report.ANOMALY_COLUMN_DOCS
                ),
                **meta,
            },
        )
        yield dg.MaterializeResult(
            asset_key=ROW_POOLS_KEY,
            metadata={
                "dagster/row_count": result.ledger_rows,
                "replay_mode": dg.MetadataValue.text(result.replay_mode),
                "replayed_rows": dg.MetadataValue.int(result.replayed_rows),
                "dagster/column_schema": report.table_schema(
                    ROW_POOLS_ARROW_SCHEMA,
                    source_column_descriptions(rc.ROW_POOLS_SOURCE)[rc.ROW_POOLS_TABLE],
                ),
            },
        )
        yield from check_results(result, owned_rules)

    return ledger_reconciliation


reconciliation_multi_asset = build_reconciliation_assets(blocking=False)  # the default: no gate
reconciliation_assets: list[dg.AssetsDefinition] = [reconciliation_multi_asset]
