"""The dbt project as two Dagster multi-assets, and the dbt CLI resource that runs them.

Each runs `dbt build` over its layer — seeds, snapshots, models, their unit tests and data tests
in dependency order in one subprocess — and streams the events back as materializations (with row
counts, column schemas and column lineage) and asset-check results. The project is split in two on
purpose. The `credits` layer (the seed's views, the event catalog, the snapshot of stored
balances) feeds the ledger reconciliation, and no check may hold that back (contract
section 4): its data tests are all `warn`, and only a step that really errors (bad SQL, a missing
column, a failing unit test: a bug whatever the data) fails it. The `marts` layer carries the
blocking checks (severity `error`: a key a mart itself duplicated); a failed one fails the marts
step alone, after the reconciliation's inputs are built. The marts step also builds
`int_credit_replay`, the reconciliation's own replay row by row (source `replay`): the marts never
replay the ledger themselves. `build_dbt_assets(project)` defines
the steps for the dbt project of the engine `definitions.py` chose (`dbt_project_for(kind)`), and
prepares its manifest first, so the definitions load from a fresh clone.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.core.dbt_event_iterator import DbtEventIterator
from pydantic import Field

from credits_pipeline.dbt_vars import build_vars_args
from credits_pipeline.transform.column_lineage import lineage_metadata, lineage_store
from credits_pipeline.transform.dbt_project import (
    dbt_cli_resource,
    dbt_environment,
    keep_partial_parse,
    prepare_manifest,
    seeded_target_path,
)
from credits_pipeline.transform.translator import CREDITS_SCHEMA, MARTS_SCHEMA, CreditsDbtTranslator
from credits_pipeline.warehouse.interface import Warehouse, WarehouseParam
from credits_pipeline.warehouse.raw_tables import newest_rows_markdown

DBT_RESOURCE_KEY = "dbt"
# The replayed ledger (int_credit_replay) and the helpers built from it (int_ledger_row_plans) live
# in `credits` but read the reconciliation's replay, so the marts step builds them, after the
# reconciliation; the credits step, which the reconciliation reads, leaves them out.
REPLAY_MODEL_SELECT = "int_credit_replay+"
CREDITS_LAYER_SELECT = f"config.schema:{CREDITS_SCHEMA}"
MARTS_LAYER_SELECT = f"config.schema:{MARTS_SCHEMA} {REPLAY_MODEL_SELECT}"
# The revenue mart is built in a step of its own: when ERROR ledger checks are set to block it
# (CREDITS_BLOCK_REVENUE_ON_ERROR), only this step waits on the reconciliation, and the other marts
# are built whatever the checks found.
REVENUE_MODEL_SELECT = "revenue_attribution"
# The three dbt steps (their op names), in the order they run.
CREDITS_STEP = "dbt_credit_models"
MARTS_STEP = "dbt_mart_models"
REVENUE_STEP = "dbt_revenue_model"
# The op of each dbt step, for run configuration (`full_refresh`, credits-pipeline --full-refresh).
DBT_OPS: tuple[str, ...] = (CREDITS_STEP, MARTS_STEP, REVENUE_STEP)
# dbt node statuses that mean a step itself went wrong (a failing test is "fail" or "warn").
DBT_ERROR_STATUSES = frozenset({"error", "runtime error"})
# A failing dbt unit test is a bug in a model's SQL, whatever the data: dbt skips the model it
# tests, and the step fails naming the unit test (dagster-dbt reports no result for unit tests).
UNIT_TEST_PREFIX = "unit_test."
UNIT_TEST_FAILED = "fail"

DBT_TRANSLATOR = CreditsDbtTranslator()


def dbt_resource(project: DbtProject) -> DbtCliResource:
    """The dbt CLI resource for the credits project, on the profile target of `project`."""
    return dbt_cli_resource(project)


class DbtBuildConfig(dg.Config):
    """Run configuration of a dbt step, set in the launchpad ("Materialize" with config)."""

    full_refresh: bool = Field(
        default=False,
        description=(
            "Rebuild the models kept per user (int_credit_replay) whole instead of rebuilding "
            "only the users the reconciliation replayed since (`dbt build --full-refresh`): after "
            "a change to the model's SQL (docs/deployment.md)."
        ),
    )


def build_args(config: DbtBuildConfig) -> list[str]:
    """The dbt command a step runs for its run configuration, with the vars the pipeline's
    settings decide (`dbt_vars.py`: the staleness age the source-staleness check uses too)."""
    command = ["build", "--full-refresh"] if config.full_refresh else ["build"]
    return [*command, *build_vars_args()]


def build_layer(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: Warehouse,
    project: DbtProject,
    config: DbtBuildConfig | None = None,
) -> Iterator[Any]:
    """`dbt build` the selected part of a layer, streaming its events; raise only on real errors.

    Test failures are reported as asset-check results (a failed `error` test becomes a failed
    blocking check, which Dagster turns into a step failure itself); a node that errored makes
    the step fail with dbt's own message.
    """
    config = config or DbtBuildConfig()
    # a target seeded with this warehouse's partial parse: dbt does not re-parse every step
    step = f"{context.op_execution_context.op.name}-{context.run_id[:7]}"
    target = seeded_target_path(step, project)
    with dbt_environment():
        invocation = dbt.cli(
            build_args(config), context=context, raise_on_error=False, target_path=target
        )
    try:
        events = with_row_counts_and_columns(context, invocation, lineage_store(project))
    finally:
        release_warehouse_connections(invocation)
        keep_partial_parse(target, project)
    run_results: dict = {}
    with contextlib.suppress(OSError, ValueError):  # no run_results.json: dbt ran nothing
        run_results = invocation.get_artifact("run_results.json")
    events = warehouse.dbt_usage(events, run_results)  # BigQuery: bytes processed/billed per model
    yield from with_previews(context, warehouse, events)
    errored = errored_nodes(invocation)
    if errored:
        raise dg.Failure(
            description=failure_description(invocation, errored),
            metadata={"dbt errors": dg.MetadataValue.md(_error_markdown(invocation, errored))},
        )


def with_row_counts_and_columns(
    context: dg.AssetExecutionContext,
    invocation: DbtCliInvocation,
    store: Path | None = None,
) -> list[Any]:
    """dbt's events with row counts, column schemas and column lineage, fetched once dbt is done.

    Why not `invocation.stream().fetch_row_counts().fetch_column_metadata()` directly: on DuckDB
    dagster-dbt's metadata threads wait for the dbt process to exit (it holds the warehouse's
    lock) by polling their futures in a loop without sleeping, which kept a whole core busy for as
    long as dbt ran: on a two-core worker, half the machine taken from dbt and DuckDB. Reading
    dbt's events to the end first (a blocking read of its output) leaves the threads only the
    metadata queries themselves. Column lineage comes from sqlglot over the compiled SQL (the
    models name every column they read and have no ephemeral parents, so every column
    resolves), computed once per version of a model and then reused (`column_lineage.py`, kept
    in `store` too).
    """
    streamed = list(invocation.stream())
    # One stage at a time, each over a list: chained, the column stage's loop spins (dagster's
    # `imap` polls without sleeping while its input is not exhausted) for as long as the row counts
    # run, taking the GIL from the threads that run them: 2.7 M polls, ~4 s of the credits step at
    # 100,000 users (bench/end_to_end.py).
    counted = list(DbtEventIterator(iter(streamed), invocation).fetch_row_counts())
    events = list(
        DbtEventIterator(iter(counted), invocation).fetch_column_metadata(with_column_lineage=False)
    )
    return [
        event.with_metadata(
            {**event.metadata, **lineage_metadata(context, invocation, event, store)}
        )
        if isinstance(event, (dg.Output, dg.AssetMaterialization))
        else event
        for event in events
    ]


PREVIEW_ROWS = 5
ROW_COUNT_KEY = "dagster/row_count"
# Columns that say how new a row is, in the order they are preferred for "newest rows first".
RECENCY_SUFFIXES = ("created_at", "_at", "_date", "_month")


def recency_column(columns: list[str]) -> str:
    """The column a preview sorts by: a timestamp or period column if the model has one."""
    for suffix in RECENCY_SUFFIXES:
        for column in columns:
            if column.endswith(suffix):
                return column
    return columns[0]


def with_previews(
    context: dg.AssetExecutionContext, warehouse: Warehouse, events: list
) -> Iterator[Any]:
    """Attach to each built model a Markdown preview of its newest rows (and a row count to views:
    dagster-dbt's `fetch_row_counts` has counted the tables already).

    Read after dbt has finished and released the DuckDB file; marts and the seed's views hold no
    personal data (it is never extracted). Where the warehouse offers no preview session
    (BigQuery: each preview would be billed) the events pass through unchanged.
    """
    with warehouse.preview_session() as con:
        if con is None:
            yield from events
            return
        for event in events:
            if isinstance(event, dg.Output):
                event = event.with_metadata(
                    {
                        **event.metadata,
                        **_preview(
                            con,
                            context.asset_key_for_output(event.output_name),
                            count_rows=ROW_COUNT_KEY not in event.metadata,
                        ),
                    }
                )
            yield event


def _preview(con: Any, key: dg.AssetKey, count_rows: bool) -> dict[str, Any]:
    schema, name = key.path[0], key.path[-1]
    columns = [
        r[0]
        for r in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and "
            "table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
    ]
    if not columns:
        return {}
    relation = f"{schema}.{name}"
    metadata: dict[str, Any] = {
        "preview": dg.MetadataValue.md(
            newest_rows_markdown(con, relation, recency_column(columns), PREVIEW_ROWS)
        )
    }
    if count_rows:  # a view: dagster-dbt counts tables only
        metadata[ROW_COUNT_KEY] = dg.MetadataValue.int(
            con.execute(f"select count(*) from {relation}").fetchone()[0]
        )
    return metadata


def errored_nodes(invocation: DbtCliInvocation) -> list[str]:
    """dbt nodes that errored and unit tests that failed (not data tests that merely failed);
    the whole command if dbt crashed."""
    try:
        results = invocation.get_artifact("run_results.json")["results"]
    except Exception:  # no run_results.json: dbt did not get as far as running anything
        return [] if invocation.process.returncode == 0 else [invocation.dbt_command]
    return [
        r["unique_id"]
        for r in results
        if r["status"] in DBT_ERROR_STATUSES
        or (r["unique_id"].startswith(UNIT_TEST_PREFIX) and r["status"] == UNIT_TEST_FAILED)
    ]


DBT_LOG_ERRORS_HEADING = "Errors parsed from dbt logs:"  # how dagster-dbt introduces dbt's own


def dbt_stopped_early(invocation: DbtCliInvocation) -> str | None:
    """dbt's own error when it stopped before writing `run_results.json` (None when it wrote it).

    Why: a dbt that dies before running any node (a profile it cannot render, a killed process,
    a DuckDB that could not start) leaves no results to read; its error is in its log lines,
    which dagster-dbt collects. Without this, the step said only that the file was missing.
    """
    try:
        invocation.get_artifact("run_results.json")
        return None
    except (OSError, ValueError):
        pass
    code = invocation.process.returncode
    error = str(invocation.get_error() or "")
    said = error.split(DBT_LOG_ERRORS_HEADING, 1)[-1].strip() if error else ""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return f"dbt exited with code {code} before running any node: " + (
        " ".join(lines) or "no error in its log (killed?); see the dbt log"
    )


def failure_description(invocation: DbtCliInvocation, errored: list[str]) -> str:
    """The step's failure in one line: dbt's own error if it stopped early, else the nodes."""
    stopped = dbt_stopped_early(invocation)
    if stopped is not None:
        return stopped
    return f"dbt build errored on {len(errored)} node(s): {', '.join(errored)}"


def _error_markdown(invocation: DbtCliInvocation, errored: list[str]) -> str:
    stopped = dbt_stopped_early(invocation)
    if stopped is not None:
        return f"- `{invocation.dbt_command}`: {stopped}"
    results = {r["unique_id"]: r for r in invocation.get_artifact("run_results.json")["results"]}
    return "\n".join(
        f"- `{uid}`: {(results.get(uid) or {}).get('message') or 'see the dbt log'}"
        for uid in errored
    )


def release_warehouse_connections(invocation: Any) -> None:
    """Close the adapter connection dagster-dbt opened in this process for row counts and columns.

    dbt-duckdb keeps one DuckDB connection per process, opened with the profile's settings; left
    open, it would hold the warehouse file so that the next step of an in-process run (the
    reconciliation, a test) could not open it with its own configuration.
    """
    adapter = getattr(invocation, "adapter", None)
    if adapter is None:
        return
    adapter.cleanup_connections()
    manager = type(adapter.connections)
    environment = getattr(manager, "_ENV", None)  # dbt-duckdb's per-process environment
    if environment is not None:
        environment.close()
    close_all = getattr(manager, "close_all_connections", None)
    if close_all is not None:
        close_all()


def dbt_layer(
    project: DbtProject,
    name: str,
    select: str,
    description: str,
    exclude: str | None = None,
) -> dg.AssetsDefinition:
    """One `dbt build` step over part of the project; the layers differ only in their selection."""

    @dbt_assets(
        manifest=prepare_manifest(project),
        project=project,
        dagster_dbt_translator=DBT_TRANSLATOR,
        select=select,
        exclude=exclude,
        name=name,
    )
    def _build(
        context: dg.AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseParam,
        config: DbtBuildConfig,
    ):
        yield from build_layer(context, dbt, warehouse, project, config)

    _build.__doc__ = description
    return _build


class DbtSteps(NamedTuple):
    """The three dbt steps of one dbt project, in the order they run."""

    credit_models: dg.AssetsDefinition
    mart_models: dg.AssetsDefinition
    revenue_model: dg.AssetsDefinition


def build_dbt_assets(project: DbtProject) -> DbtSteps:
    """Everything dbt builds, for `dg.Definitions(assets=[*build_dbt_assets(project), ...])`."""
    return DbtSteps(
        dbt_layer(
            project,
            CREDITS_STEP,
            CREDITS_LAYER_SELECT,
            "Build and test the seed's credit models, the event catalog and the snapshot of "
            "stored balances (`credits`), which the reconciliation reads.",
            exclude=REPLAY_MODEL_SELECT,
        ),
        dbt_layer(
            project,
            MARTS_STEP,
            MARTS_LAYER_SELECT,
            "Build and test the reconciliation's replayed ledger (`credits.int_credit_replay`) "
            "and the analytics marts (`marts`), all but revenue.",
            exclude=REVENUE_MODEL_SELECT,
        ),
        dbt_layer(
            project,
            REVENUE_STEP,
            REVENUE_MODEL_SELECT,
            "Build and test `marts.revenue_attribution` (optionally held back by ERROR ledger "
            "checks).",
        ),
    )
