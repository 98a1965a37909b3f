"""The extraction assets: `syllaby_v2/<table>` (external) → `raw/<table>` in the warehouse.

Three shapes, chosen by how each table changes (contract section 1, `Table.strategy`):
- the ledger `credit_histories` is append-only: daily partitions by `created_at`, one run per
  range (single-run backfill), each load replacing exactly its days;
- `users` must be read in the same snapshot as the ledger rows its balances are compared with, so
  one multi-asset opens a consistent-snapshot transaction, reads `users` whole and every ledger row
  the closed partitions do not hold (the open day, NULL or out-of-range `created_at`, late writes),
  and records the cut — all swapped into the warehouse in one transaction;
- content and billing tables change in place: read by an `updated_at` watermark and merged by id;
  the two small catalogs (`credit_events`, `plans`) are replaced whole.
"""


import contextlib
import datetime as dt
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.extract.common import (
    extraction_metadata,
    finish_tally,
    stage_batches,
    validation_check_result,
    validation_check_spec,
)
from credits_pipeline.names import (
    CUTOFF_TABLE,
    GROUP_RAW,
    GROUP_SOURCE,
    OPEN_LEDGER_TABLE,
    OWNER_DATA_ENGINEERING,
    raw_key,
    source_key,
)
from credits_pipeline.source.drift import drift_check_result, drift_check_spec
from credits_pipeline.source.reader import SourceDatabase, SourceError, check_table, dialect_family
from credits_pipeline.source import tables as tables_module
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES, USERS, Table
from credits_pipeline.warehouse.bigquery_raw_tables import stager_for as Stager
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline.warehouse.raw_tables import (
    CUTOFF_TABLE as CUTOFF_RELATION,
)
from credits_pipeline.warehouse.raw_tables import (
    OPEN_LEDGER,
    OPEN_PARTITION_LABEL,
    closed_ledger_bounds,
    staged_watermark,
    watermark,
)

# How far before the last watermark a merge re-reads, for transactions that committed late with
# an older `updated_at`. Re-reading is harmless: rows merge by id.
WATERMARK_LOOKBACK = dt.timedelta(minutes=30)

LEDGER_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=settings.ledger_start_date().isoformat(), timezone="UTC", fmt="%Y-%m-%d"
)


def source_kind() -> str:
    """The Dagster kind tag of the configured source: mysql, postgres or sqlite."""
    url = settings.configured_source_url()  # unset or malformed: refused when the location loads
    family = dialect_family(url) if url else "sqlite"
    return {"postgresql": "postgres"}.get(family, family)


def warehouse_kinds() -> set[str]:
    return {"duckdb", "pandera"} if settings.warehouse_kind() == "duckdb" else {"bigquery", "pandera"}


def watermark_metadata(newest_at: dt.datetime | None, newest_id: int | None, column: str) -> dict:
    """Where an extraction has got to: the newest `column` value and the highest id loaded."""
    meta: dict[str, dg.MetadataValue] = {}
    if newest_at is not None:
        meta[f"watermark_{column}"] = dg.MetadataValue.timestamp(newest_at.replace(tzinfo=dt.UTC))
    if newest_id is not None:
        meta["watermark_max_id"] = dg.MetadataValue.int(int(newest_id))
    return meta


@contextlib.contextmanager
def source_errors_as_failure() -> Iterator[None]:
    """Turn a SourceError into a Dagster Failure: one clear message, no traceback in the UI."""
    try:
        yield
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def table_code_reference(table: Table) -> dg.CodeReferencesMetadataValue:
    """Where a source table's columns are written down: its `Table(...)` in source/tables.py.

    External specs have no function for `dg.with_source_code_references` to point at, so the
    reference is built here, at the line that opens the table's definition.
    """
    path = Path(tables_module.__file__).resolve()
    opening = f'    "{table.name}",'
    lines = path.read_text().splitlines()
    line = next(
        (i for i in range(1, len(lines)) if lines[i] == opening and lines[i - 1].endswith("= Table(")),
        None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta in 1.13
        return dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(
                    file_path=str(path),
                    line_number=line,  # the `X = Table(` line (1-based: index of the next line)
                    label=f"contract table syllaby_v2.{table.name}",
                )
            ]
        )


source_table_specs = [
    dg.AssetSpec(
        key=source_key(t.name),
        group_name=GROUP_SOURCE,
        description=f"`syllaby_v2.{t.name}` in the operational database (read only). {t.description}",
        kinds={source_kind()},
        owners=[OWNER_DATA_ENGINEERING],
        metadata={
            "dagster/table_name": f"syllaby_v2.{t.name}",
            "dagster/code_references": table_code_reference(t),
        },
    )
    for t in TABLES
]


# -- the ledger ---------------------------------------------------------------------------------

LEDGER_KEY = raw_key(CREDIT_HISTORIES.name)


@dg.asset(
    key=LEDGER_KEY,
    deps=[source_key(CREDIT_HISTORIES.name)],
    partitions_def=LEDGER_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP_RAW,
    kinds=warehouse_kinds(),
    owners=[OWNER_DATA_ENGINEERING],
    check_specs=[validation_check_spec(LEDGER_KEY), drift_check_spec(LEDGER_KEY)],
    description="Closed days of the credit ledger `syllaby_v2.credit_histories`, one daily partition "
    "per UTC day of `created_at`. Rows with NULL or out-of-range `created_at`, and the open day, are "
    "read at the consistent cut into `raw.credit_histories__open`. Quarantine: "
    "`raw.credit_histories__rejected`.",
)
def raw_credit_histories(
    context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: DuckDBWarehouse
):
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    bounds = {
        "start": dt.datetime.combine(start, dt.time()),
        "end": dt.datetime.combine(end, dt.time()),
    }
    extracted_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with source_errors_as_failure(), source.connect() as conn, warehouse.connect() as con:
        check_table(conn, CREDIT_HISTORIES)
        stager = Stager(con, CREDIT_HISTORIES)
        context.log.info(f"reading syllaby_v2.credit_histories for [{start}, {end}) from {source.display_name()}")
        tally = stage_batches(
            stager,
            # Fast path (connectorx → typed Arrow → polars validation → DuckDB), falling back to
            # SQLAlchemy on `conn`; see credits_pipeline/source/fast_reader.py and bench/extract.py.
            source.read_batches_fast(conn, CREDIT_HISTORIES, "created_at >= :start AND created_at < :end", bounds),
            label=start.isoformat(),
        )
        per_day = stager.swap_ledger_range(start, end)
        finish_tally(tally, stager)
        # the closed ledger's watermark: how far the daily partitions reach, in time and in id
        newest_created_at, newest_id = con.execute(  # type: ignore[misc]
            f"select max(created_at), max(id) from raw.{CREDIT_HISTORIES.name}"
        ).fetchone()
        metadata = extraction_metadata(
            tally,
            CREDIT_HISTORIES,
            extracted_at,
            con,
            f"raw.{CREDIT_HISTORIES.name}",
            with_partition=True,
            extra={
                "partition_range": dg.MetadataValue.text(f"[{start}, {end})"),
                "partitions_replaced": dg.MetadataValue.int(len(per_day)),
                **watermark_metadata(newest_created_at, newest_id, "created_at"),
                "rows_outside_partitions": dg.MetadataValue.text(
                    "NULL, pre-start and open-day rows are extracted by raw/credit_histories__open "
                    "at the consistent cut"
                ),
            },
        )
    context.log.info(f"credit_histories [{start}, {end}): {tally.rows_loaded} loaded, {tally.rows_rejected} quarantined")
    yield dg.MaterializeResult(metadata=metadata)
    yield validation_check_result(tally, LEDGER_KEY)
    yield drift_check_result(CREDIT_HISTORIES, LEDGER_KEY)


# -- the consistent cut: users, the open ledger and the cut-off ----------------------------------

USERS_KEY = raw_key(USERS.name)
OPEN_KEY = raw_key(OPEN_LEDGER_TABLE)
CUTOFF_KEY = raw_key(CUTOFF_TABLE)
OPEN_LEDGER_WHERE = "created_at IS NULL OR created_at < :range_start OR created_at >= :closed_before OR id > :closed_max_id"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            USERS_KEY,
            deps=[source_key(USERS.name)],
            description="Users and their stored credit pools, read whole inside the consistent cut "
            "(never name or e-mail). Quarantine: `raw.users__rejected`.",
            group_name=GROUP_RAW,
            kinds=warehouse_kinds(),
            owners=[OWNER_DATA_ENGINEERING],
        ),
        dg.AssetSpec(
            OPEN_KEY,
            deps=[source_key(CREDIT_HISTORIES.name), LEDGER_KEY],
            description="Ledger rows the closed daily partitions do not hold — the open day, NULL or "
            "out-of-range `created_at`, rows written late — read in the same snapshot as `raw.users`.",
            group_name=GROUP_RAW,
            kinds=warehouse_kinds(),
            owners=[OWNER_DATA_ENGINEERING],
        ),
        dg.AssetSpec(
            CUTOFF_KEY,
            description="The extraction cut-off: the time of the consistent snapshot, and where the "
            "closed ledger partitions end. Marts measure 'last N days' from it, never from now().",
            group_name=GROUP_RAW,
            kinds=warehouse_kinds() - {"pandera"},
            owners=[OWNER_DATA_ENGINEERING],
        ),
    ],
    check_specs=[validation_check_spec(USERS_KEY), validation_check_spec(OPEN_KEY), drift_check_spec(USERS_KEY)],
)
def raw_consistent_cut(context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: DuckDBWarehouse):
    range_start = dt.datetime.combine(settings.ledger_start_date(), dt.time())
    with source_errors_as_failure(), warehouse.connect() as con:
        closed_before, closed_max_id = closed_ledger_bounds(con, settings.ledger_start_date())
        with source.consistent_snapshot() as (conn, cutoff):
            check_table(conn, USERS)
            check_table(conn, CREDIT_HISTORIES)
            users_stager = Stager(con, USERS)
            users_tally = stage_batches(users_stager, source.read_batches(conn, USERS), label="whole")
            open_stager = Stager(con, CREDIT_HISTORIES, target=OPEN_LEDGER)
            params = {"range_start": range_start, "closed_before": closed_before, "closed_max_id": closed_max_id}
            open_tally = stage_batches(
                open_stager,
                source.read_batches(conn, CREDIT_HISTORIES, OPEN_LEDGER_WHERE, params),
                label=OPEN_PARTITION_LABEL,
            )
        where_open_rows_came_from = con.execute(
            f"""
            select
                count(*) filter (where created_at is null) as null_created_at,
                count(*) filter (where created_at < ?) as before_partition_range,
                count(*) filter (where created_at >= ? and created_at <= ?) as open_days,
                count(*) filter (where created_at > ?) as after_cutoff,
                count(*) filter (where created_at >= ? and created_at < ?) as written_late
            from {open_stager.stage}
            """,
            [range_start, closed_before, cutoff, cutoff, range_start, closed_before],
        ).fetchone()
        con.execute("begin transaction")
        try:
            users_stager.replace_whole(in_transaction=True)
            open_stager.replace_whole(OPEN_PARTITION_LABEL, in_transaction=True)
            con.execute(f"delete from {CUTOFF_RELATION}")
            con.execute(f"insert into {CUTOFF_RELATION} values (?, ?, ?)", [cutoff, closed_before, closed_max_id])
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        finish_tally(users_tally, users_stager)
        finish_tally(open_tally, open_stager)
        users_meta = extraction_metadata(users_tally, USERS, cutoff, con, f"raw.{USERS.name}")
        labels = ("null_created_at", "before_partition_range", "open_days", "after_cutoff", "written_late")
        open_meta = extraction_metadata(
            open_tally,
            CREDIT_HISTORIES,
            cutoff,
            con,
            f"raw.{OPEN_LEDGER}",
            with_partition=True,
            extra={
                "closed_partitions_end": dg.MetadataValue.timestamp(closed_before.replace(tzinfo=dt.UTC)),
                "closed_max_id": dg.MetadataValue.int(closed_max_id),
                **{f"rows_{k}": dg.MetadataValue.int(int(v or 0)) for k, v in zip(labels, where_open_rows_came_from)},  # type: ignore[arg-type]
            },
        )
    context.log.info(
        f"consistent cut at {cutoff:%Y-%m-%d %H:%M:%S} UTC: {users_tally.rows_loaded} users, "
        f"{open_tally.rows_loaded} open ledger rows"
    )
    cut_ts = dg.MetadataValue.timestamp(cutoff.replace(tzinfo=dt.UTC))
    yield dg.MaterializeResult(asset_key=USERS_KEY, metadata=users_meta)
    yield dg.MaterializeResult(asset_key=OPEN_KEY, metadata=open_meta)
    yield dg.MaterializeResult(
        asset_key=CUTOFF_KEY,
        metadata={
            "extraction_cutoff": cut_ts,
            "ledger_closed_before": dg.MetadataValue.timestamp(closed_before.replace(tzinfo=dt.UTC)),
            "dagster/row_count": dg.MetadataValue.int(1),
        },
    )
    yield validation_check_result(users_tally, USERS_KEY)
    yield validation_check_result(open_tally, OPEN_KEY)
    yield drift_check_result(USERS, USERS_KEY)


# -- dimension and content tables ----------------------------------------------------------------


def _dimension_asset(table: Table) -> dg.AssetsDefinition:
    key = raw_key(table.name)
    how = (
        "replaced whole on every run (a small catalog)"
        if table.strategy == "full"
        else "read by an `updated_at` watermark and merged by id"
    )

    @dg.asset(
        key=key,
        deps=[source_key(table.name)],
        group_name=GROUP_RAW,
        kinds=warehouse_kinds(),
        owners=[OWNER_DATA_ENGINEERING],
        check_specs=[validation_check_spec(key), drift_check_spec(key)],
        description=f"{table.description} Copied from `syllaby_v2.{table.name}`, {how}. "
        f"Quarantine: `raw.{table.name}__rejected`.",
    )
    def _extract(context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: DuckDBWarehouse):
        extracted_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        with source_errors_as_failure(), source.connect() as conn, warehouse.connect() as con:
            check_table(conn, table)
            stager = Stager(con, table)
            previous = watermark(con, table.name) if table.strategy == "merge" else None
            where, params = None, {}
            if previous is not None:
                since = (previous[0] - WATERMARK_LOOKBACK) if previous[0] else dt.datetime(1970, 1, 1)
                where = "updated_at >= :since OR updated_at IS NULL OR id > :max_id"
                params = {"since": since, "max_id": int(previous[1] or 0)}
            tally = stage_batches(stager, source.read_batches(conn, table, where, params), label="whole")
            if table.strategy == "merge":
                staged = staged_watermark(con, stager.stage)
                new_mark = (
                    max([m for m in (staged[0], previous and previous[0]) if m is not None], default=None),
                    max([m for m in (staged[1], previous and previous[1]) if m is not None], default=None),
                )
                stager.merge_by_id(new_mark)
            else:
                new_mark = None
                stager.replace_whole()
            finish_tally(tally, stager)
            extra = {"extraction_mode": dg.MetadataValue.text("incremental" if previous else "full")}
            if new_mark:
                extra.update(watermark_metadata(new_mark[0], new_mark[1], "updated_at"))
            metadata = extraction_metadata(tally, table, extracted_at, con, f"raw.{table.name}", extra=extra)
        yield dg.MaterializeResult(metadata=metadata)
        yield validation_check_result(tally, key)
        yield drift_check_result(table, key)

    return _extract


dimension_assets = [_dimension_asset(t) for t in TABLES if t.strategy in ("full", "merge")]

extraction_assets = [raw_credit_histories, raw_consistent_cut, *dimension_assets]
