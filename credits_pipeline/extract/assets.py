"""The extraction assets: `syllaby_v2/<table>` (external) → `raw/<table>` in the warehouse.

Three shapes, chosen by how each table changes (contract section 1, `Table.strategy`):
- the ledger `credit_histories` is append-only: daily partitions by `created_at`, one run per
  range (single-run backfill), each load replacing exactly its days;
- `users` must be read in the same snapshot as the ledger rows its balances are compared with, so
  one multi-asset opens a consistent-snapshot transaction, reads `users` whole and every ledger row
  the closed partitions do not hold (the open day, NULL or out-of-range `created_at`, late writes),
  and records the cut — all swapped into the warehouse in one transaction; closed days are
  checked by fingerprint (extract/fingerprint.py), so rows written late, rewritten or deleted in
  days already loaded are found without re-reading history (docs/warehouse-layout.md);
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
from credits_pipeline.extract.column_docs import raw_table_schema
from credits_pipeline.extract.common import (
    COLUMN_SCHEMA_METADATA,
    CUTOFF_METADATA,
    ROWS_LOADED_METADATA,
    ROWS_QUARANTINED_METADATA,
    ROWS_READ_METADATA,
    extraction_metadata,
    finish_tally,
    stage_batches,
    validation_check_result,
    validation_check_spec,
)
from credits_pipeline.extract.cut_scope import (
    FULL_CHECK,
    CutScope,
    RecentReader,
    partition_read_from,
    plan_cut,
)
from credits_pipeline.extract.fingerprint import DEFINITION as FINGERPRINT_DEFINITION
from credits_pipeline.extract.fingerprint import (
    ClosedDaysPlan,
    day_ranges,
    source_day_fingerprints,
    source_max_id,
)
from credits_pipeline.extract.read_fingerprint import ReadFingerprints, fingerprints_from_read
from credits_pipeline.ledger_fingerprint import EMPTY as EMPTY_DAY
from credits_pipeline.names import (
    CUTOFF_TABLE,
    GROUP_RAW,
    GROUP_SOURCE,
    OPEN_LEDGER_TABLE,
    OWNER_DATA_ENGINEERING,
    WAREHOUSE_KIND,
    raw_key,
    source_key,
)
from credits_pipeline.source import tables as tables_module
from credits_pipeline.source.drift import drift_check_result, drift_check_spec
from credits_pipeline.source.reader import SourceError, check_table, dialect_family
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES, USERS, Table
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.interface import WarehouseParam
from credits_pipeline.warehouse.raw_tables import (
    CUTOFF_RELATION,
    OPEN_PARTITION_LABEL,
    closed_ledger_end,
    fold_closed_ledger_rows,
    partition_row_counts,
    record_full_check,
    replace_ledger_fingerprints,
    staged_watermark,
    stored_ledger_fingerprints,
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
    """Validated with pandera, stored in the warehouse (its engine's kind: definitions.py)."""
    return {WAREHOUSE_KIND, "pandera"}


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
        (
            i
            for i in range(1, len(lines))
            if lines[i] == opening and lines[i - 1].endswith("= Table(")
        ),
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
        description=(
            f"`syllaby_v2.{t.name}` in the operational database (read only). {t.description}"
        ),
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
    metadata={COLUMN_SCHEMA_METADATA: raw_table_schema(CREDIT_HISTORIES, with_partition=True)},
    description="Closed days of the credit ledger `syllaby_v2.credit_histories`, one daily "
    "partition per UTC day of `created_at`; each day keeps a fingerprint of what was read. Rows "
    "with NULL or future `created_at`, the open day and rows written late are read at the "
    "consistent cut into `raw.credit_histories__open` (late rows and the history before the "
    "first partition are also written into their own day here). Quarantine: "
    "`raw.credit_histories__rejected`.",
)
def raw_credit_histories(
    context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: WarehouseParam
):
    window = context.partition_time_window
    start, end = window.start.date(), window.end.date()
    bounds: dict[str, object] = {
        "start": dt.datetime.combine(start, dt.time()),
        "end": dt.datetime.combine(end, dt.time()),
    }
    extracted_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with source_errors_as_failure(), source.connect() as conn, warehouse.connect() as con:
        check_table(conn, CREDIT_HISTORIES)
        stager = session.stager(con, CREDIT_HISTORIES)
        # Before reading: the source's highest id. The days read then hold every row at or below
        # it (see extract/fingerprint.py): later rows are late. Each day's fingerprint up to it is
        # summed from the rows read (extract/read_fingerprint.py), or, on SQLite, asked of the
        # source before reading.
        through_id = source_max_id(conn)
        # A day the last cut held open is read by id from where the warehouse says it starts
        # (extract/cut_scope.py): no scan of the whole ledger for lack of an index on created_at.
        read_from = partition_read_from(
            con, dt.datetime.combine(start, dt.time()), dt.datetime.combine(end, dt.time())
        )
        prints = ReadFingerprints([through_id]) if fingerprints_from_read(source.family()) else None
        if prints is None:
            asked = source_day_fingerprints(conn, [through_id], start, end, min_id=read_from)
        where = "created_at >= :start AND created_at < :end"
        if read_from is not None:
            where, bounds = f"id >= :read_from_id AND {where}", bounds | {"read_from_id": read_from}
        context.log.info(
            f"reading syllaby_v2.credit_histories for [{start}, {end}) from {source.display_name()}"
            + ("" if read_from is None else f", ids from {read_from}")
        )
        tally = stage_batches(
            stager,
            # Fast path (connectorx → typed Arrow → polars validation → DuckDB), falling back to
            # SQLAlchemy on `conn`; see credits_pipeline/source/fast_reader.py and bench/extract.py.
            source.read_batches_fast(conn, CREDIT_HISTORIES, where, bounds),
            label=start.isoformat(),
            on_batch=None if prints is None else prints.add,
        )
        per_day = stager.swap_ledger_range(start, end)
        if prints is None:
            fingerprints, unknown = asked, set()
        else:
            prints.close()
            fingerprints, unknown = prints.result(), prints.unknown_between(start, end)
        replace_ledger_fingerprints(
            con,
            start,
            end,
            through_id,
            {d: f[through_id] for d, f in fingerprints.items()},
            FINGERPRINT_DEFINITION,
            unknown=unknown,
        )
        finish_tally(tally, stager)
        # the closed ledger's watermark: how far the daily partitions reach, in time and in id
        newest_created_at, newest_id = con.execute(
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
                "fingerprint_through_id": dg.MetadataValue.int(through_id),
                FINGERPRINTS_FROM_METADATA: dg.MetadataValue.text(
                    "the source's aggregate" if prints is None else "the rows read"
                ),
                DAYS_WITHOUT_FINGERPRINT_METADATA: dg.MetadataValue.int(len(unknown)),
                READ_FROM_ID_METADATA: dg.MetadataValue.int(-1 if read_from is None else read_from),
                "rows_outside_partitions": dg.MetadataValue.text(
                    "NULL-dated, open-day and late rows, and the history before the first "
                    "partition, are extracted by raw/credit_histories__open at the consistent cut"
                ),
            },
        )
        per_partition = partition_row_counts(con, start, end)
    context.log.info(
        f"credit_histories [{start}, {end}): {tally.rows_loaded} loaded, {tally.rows_rejected} "
        "quarantined"
    )
    # A ranged run records one materialization per partition: each carries its own day's counts
    # (the run's totals stay under `range_rows_*`).
    metadata["range_rows_loaded"] = dg.MetadataValue.int(tally.rows_loaded)
    metadata["range_rows_quarantined"] = dg.MetadataValue.int(tally.rows_rejected)
    for key in context.partition_keys:
        loaded, rejected = per_partition.get(dt.date.fromisoformat(key), (0, 0))
        context.add_asset_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(loaded),
                ROWS_READ_METADATA: dg.MetadataValue.int(loaded + rejected),
                ROWS_LOADED_METADATA: dg.MetadataValue.int(loaded),
                ROWS_QUARANTINED_METADATA: dg.MetadataValue.int(rejected),
            },
            partition_key=key,
        )
    yield dg.MaterializeResult(metadata=metadata)
    yield validation_check_result(tally, LEDGER_KEY)
    yield drift_check_result(CREDIT_HISTORIES, LEDGER_KEY)


# -- the consistent cut: users, the open ledger and the cut-off ----------------------------------

USERS_KEY = raw_key(USERS.name)
OPEN_KEY = raw_key(OPEN_LEDGER_TABLE)
CUTOFF_KEY = raw_key(CUTOFF_TABLE)
CLOSED_DAYS_CHECK = "closed_ledger_days_unchanged"
"""WARN check on `raw/credit_histories__open`: no closed ledger day was rewritten or lost a row."""


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            USERS_KEY,
            deps=[source_key(USERS.name)],
            description="Users and their stored credit pools, read whole inside the consistent cut "
            "(never name or e-mail). Quarantine: `raw.users__rejected`.",
            metadata={COLUMN_SCHEMA_METADATA: raw_table_schema(USERS)},
            group_name=GROUP_RAW,
            kinds=warehouse_kinds(),
            owners=[OWNER_DATA_ENGINEERING],
        ),
        dg.AssetSpec(
            OPEN_KEY,
            deps=[source_key(CREDIT_HISTORIES.name), LEDGER_KEY],
            description="Ledger rows the closed days may not hold — the open day, NULL or future "
            "`created_at`, rows written late (ids above the closed days' fingerprint bound), "
            "closed days "
            "whose fingerprint changed — read in the same snapshot as `raw.users`.",
            metadata={
                COLUMN_SCHEMA_METADATA: raw_table_schema(
                    CREDIT_HISTORIES, OPEN_LEDGER_TABLE, with_partition=True
                )
            },
            group_name=GROUP_RAW,
            kinds=warehouse_kinds(),
            owners=[OWNER_DATA_ENGINEERING],
        ),
        dg.AssetSpec(
            CUTOFF_KEY,
            description="The extraction cut-off: the time of the consistent snapshot, and where "
            "the closed ledger partitions end. Marts measure 'last N days' from it, never from "
            "now().",
            group_name=GROUP_RAW,
            kinds=warehouse_kinds() - {"pandera"},
            owners=[OWNER_DATA_ENGINEERING],
        ),
    ],
    check_specs=[
        validation_check_spec(USERS_KEY),
        validation_check_spec(OPEN_KEY),
        drift_check_spec(USERS_KEY),
        dg.AssetCheckSpec(
            name=CLOSED_DAYS_CHECK,
            asset=OPEN_KEY,
            description="Closed ledger days compared by fingerprint (row count, sum of ids, the "
            "replay inputs' checksum) between source and warehouse: fails (WARN) when a closed day "
            "was rewritten in place or lost rows since it was read. The day is read again "
            f"either way. An ordinary cut compares the last `{settings.LEDGER_RECHECK_DAYS_VAR}` "
            "closed days; a full check (metadata `ledger_check`), every "
            f"`{settings.LEDGER_FULL_CHECK_DAYS_VAR}` days, compares them all.",
        ),
    ],
)
def raw_consistent_cut(
    context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: WarehouseParam
):
    with source_errors_as_failure(), warehouse.connect() as con:
        closed_before = closed_ledger_end(con, settings.ledger_start_date())
        stored = stored_ledger_fingerprints(con, FINGERPRINT_DEFINITION)
        with source.consistent_snapshot() as (conn, cutoff):
            check_table(conn, USERS)
            check_table(conn, CREDIT_HISTORIES)
            # Which closed days changed, which were never read, and from which id rows are late:
            # the source's fingerprints at each stored bound and at the snapshot's highest id (the
            # bound stored for the next run), in one aggregate — of every closed day on a full
            # check, of the recent ones and every day's late rows, by id range, otherwise.
            snapshot_max_id = source_max_id(conn)
            open_stager = session.stager(con, CREDIT_HISTORIES, target=OPEN_LEDGER_TABLE)
            recent = RecentReader(source, conn, open_stager)
            scope = plan_cut(
                conn,
                con,
                stored,
                closed_before,
                cutoff,
                snapshot_max_id,
                read_recent=recent.read if fingerprints_from_read(source.family()) else None,
            )
            plan, source_days = scope.plan, scope.source_days
            users_stager = session.stager(con, USERS)
            users_tally = stage_batches(
                users_stager, source.read_batches(conn, USERS), label="whole"
            )
            if scope.staged:
                open_tally = recent.narrow(scope.where, scope.params)
            else:
                recent.discard()
                open_tally = stage_batches(
                    open_stager,
                    source.read_batches(conn, CREDIT_HISTORIES, scope.where, scope.params),
                    label=OPEN_PARTITION_LABEL,
                )
        where_open_rows_came_from = con.execute(
            f"""
            select
                count(*) filter (where created_at is null) as null_created_at,
                count(*) filter (where created_at >= ? and created_at <= ?) as open_days,
                count(*) filter (where created_at > ?) as after_cutoff,
                count(*) filter (where created_at < ? and id > ?) as written_late
            from {open_stager.stage}
            """,
            [closed_before, cutoff, cutoff, closed_before, plan.late_after_id],
        ).fetchone()
        con.execute("begin transaction")
        try:
            users_stager.replace_whole(in_transaction=True)
            rows_into_closed_days = fold_closed_ledger_rows(
                open_stager,
                closed_before,
                plan.late_after_id,
                day_ranges(plan.reread),
                day_ranges(plan.first_read),
            )
            open_stager.replace_whole(OPEN_PARTITION_LABEL, in_transaction=True)
            con.execute(f"delete from {CUTOFF_RELATION} where true")
            con.execute(
                f"insert into {CUTOFF_RELATION} values (?, ?, ?)",
                [cutoff, closed_before, snapshot_max_id],
            )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        # Every closed day now holds its rows up to the snapshot's highest id: the next run's bound.
        # (Stored after the commit: a crash in between only makes the next run read those days
        # again.)
        replace_ledger_fingerprints(
            con,
            None,
            closed_before.date(),
            snapshot_max_id,
            {d: f[snapshot_max_id] for d, f in source_days.items()},
            FINGERPRINT_DEFINITION,
        )
        if scope.check == FULL_CHECK:
            record_full_check(con, cutoff, snapshot_max_id)
        finish_tally(users_tally, users_stager)
        finish_tally(open_tally, open_stager)
        users_meta = extraction_metadata(users_tally, USERS, cutoff, con, f"raw.{USERS.name}")
        labels = ("null_created_at", "open_days", "after_cutoff", "written_late")
        open_meta = extraction_metadata(
            open_tally,
            CREDIT_HISTORIES,
            cutoff,
            con,
            f"raw.{OPEN_LEDGER_TABLE}",
            with_partition=True,
            extra={
                "closed_partitions_end": dg.MetadataValue.timestamp(
                    closed_before.replace(tzinfo=dt.UTC)
                ),
                "late_rows_after_id": dg.MetadataValue.int(plan.late_after_id),
                "closed_max_id": dg.MetadataValue.int(snapshot_max_id),
                **{
                    f"rows_{k}": dg.MetadataValue.int(int(v or 0))
                    for k, v in zip(labels, where_open_rows_came_from, strict=False)
                },
                **closed_days_metadata(plan, rows_into_closed_days),
                **cut_scope_metadata(scope),
                ROWS_ALREADY_HELD_METADATA: dg.MetadataValue.int(recent.already_held),
                ROWS_READ_AGAIN_METADATA: dg.MetadataValue.int(recent.discarded_rows),
            },
        )
    context.log.info(
        f"consistent cut at {cutoff:%Y-%m-%d %H:%M:%S} UTC: {users_tally.rows_loaded} users, "
        f"{open_tally.rows_loaded} open ledger rows ({rows_into_closed_days} into closed days; "
        f"{len(plan.changed)} changed closed day(s) re-read, {len(plan.first_read)} read for the "
        "first time)"
    )
    cut_ts = dg.MetadataValue.timestamp(cutoff.replace(tzinfo=dt.UTC))
    yield dg.MaterializeResult(asset_key=USERS_KEY, metadata=users_meta)
    yield dg.MaterializeResult(asset_key=OPEN_KEY, metadata=open_meta)
    yield dg.MaterializeResult(
        asset_key=CUTOFF_KEY,
        metadata={
            CUTOFF_METADATA: cut_ts,
            "ledger_closed_before": dg.MetadataValue.timestamp(
                closed_before.replace(tzinfo=dt.UTC)
            ),
            "dagster/row_count": dg.MetadataValue.int(1),
        },
    )
    yield validation_check_result(users_tally, USERS_KEY)
    yield validation_check_result(open_tally, OPEN_KEY)
    yield closed_days_check_result(plan, source_days, stored, OPEN_KEY)
    yield drift_check_result(USERS, USERS_KEY)


MAX_LISTED_DAYS = 20
LEDGER_CHECK_METADATA = "ledger_check"
READ_FROM_ID_METADATA = "read_from_id"
ROWS_ALREADY_HELD_METADATA = "rows_already_held"
"""Rows the cut's one read of a recent check fetched and dropped: closed-day rows the warehouse
holds already, read for their fingerprint (`cut_scope.RecentRead`)."""
ROWS_READ_AGAIN_METADATA = "rows_read_before_fallback"
"""Rows a recent check read and then threw away to read otherwise (a quarantined row, or a fall
back to a full check)."""
FINGERPRINTS_FROM_METADATA = "fingerprints_from"
DAYS_WITHOUT_FINGERPRINT_METADATA = "days_without_fingerprint"


def cut_scope_metadata(scope: CutScope) -> dict:
    """Which check the cut ran and from which id it read the source (-1: by dates, every id)."""
    what = (
        f"full: every closed day compared ({scope.why_full})"
        if scope.check == FULL_CHECK
        else f"recent: closed days from {scope.recheck_from} compared, older ones by their late "
        "rows only"
    )
    return {
        LEDGER_CHECK_METADATA: dg.MetadataValue.text(what),
        READ_FROM_ID_METADATA: dg.MetadataValue.int(
            -1 if scope.read_from_id is None else scope.read_from_id
        ),
    }


def closed_days_metadata(plan: ClosedDaysPlan, rows_into_closed_days: int) -> dict:
    """How many closed days the cut read again, and why (changed in place, or first read)."""
    listed = ", ".join(d.isoformat() for d in plan.changed[:MAX_LISTED_DAYS]) or "none"
    return {
        "closed_days_reread": dg.MetadataValue.int(len(plan.reread)),
        "closed_days_changed": dg.MetadataValue.int(len(plan.changed)),
        "closed_days_first_read": dg.MetadataValue.int(len(plan.first_read)),
        "changed_days": dg.MetadataValue.text(listed),
        "rows_into_closed_days": dg.MetadataValue.int(rows_into_closed_days),
    }


def closed_days_check_result(
    plan: ClosedDaysPlan,
    source_days: dict,
    stored: dict,
    asset_key: dg.AssetKey,
) -> dg.AssetCheckResult:
    """WARN when a closed day's rows changed in place or vanished: the ledger is append-only."""
    lines = []
    for day in plan.changed[:MAX_LISTED_DAYS]:
        was = stored[day]
        now = source_days.get(day, {}).get(was.through_id, EMPTY_DAY)
        lines.append(
            f"- {day.isoformat()}: {was.fingerprint.rows} row(s) read before, {now.rows} now "
            f"(ids up to {was.through_id}); re-read"
        )
    description = (
        f"{len(plan.changed)} closed ledger day(s) changed since they were read (rows rewritten in "
        "place or deleted); they were read again."
        if plan.changed
        else "No closed ledger day changed since it was read."
    )
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CLOSED_DAYS_CHECK,
        passed=not plan.changed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "closed_days_changed": dg.MetadataValue.int(len(plan.changed)),
            "changed_days": dg.MetadataValue.md("\n".join(lines) or "none"),
        },
    )


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
        metadata={COLUMN_SCHEMA_METADATA: raw_table_schema(table)},
        description=f"{table.description} Copied from `syllaby_v2.{table.name}`, {how}. "
        f"Quarantine: `raw.{table.name}__rejected`.",
    )
    def _extract(
        context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: WarehouseParam
    ):
        extracted_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        with source_errors_as_failure(), source.connect() as conn, warehouse.connect() as con:
            check_table(conn, table)
            stager = session.stager(con, table)
            previous = watermark(con, table.name) if table.strategy == "merge" else None
            where, params = None, {}
            if previous is not None:
                since = (
                    (previous[0] - WATERMARK_LOOKBACK) if previous[0] else dt.datetime(1970, 1, 1)
                )
                where = "updated_at >= :since OR updated_at IS NULL OR id > :max_id"
                params = {"since": since, "max_id": int(previous[1] or 0)}
            # The fast path, as the ledger's partitions (no snapshot is shared here): typed Arrow
            # batches validated in polars, falling back to SQLAlchemy on `conn` if connectorx fails.
            tally = stage_batches(
                stager, source.read_batches_fast(conn, table, where, params), label="whole"
            )
            if table.strategy == "merge":
                staged = staged_watermark(con, stager.stage)
                new_mark = (
                    max(
                        [m for m in (staged[0], previous and previous[0]) if m is not None],
                        default=None,
                    ),
                    max(
                        [m for m in (staged[1], previous and previous[1]) if m is not None],
                        default=None,
                    ),
                )
                stager.merge_by_id(new_mark)
            else:
                new_mark = None
                stager.replace_whole()
            finish_tally(tally, stager)
            extra = {
                "extraction_mode": dg.MetadataValue.text("incremental" if previous else "full")
            }
            if new_mark:
                extra.update(watermark_metadata(new_mark[0], new_mark[1], "updated_at"))
            metadata = extraction_metadata(
                tally, table, extracted_at, con, f"raw.{table.name}", extra=extra
            )
        yield dg.MaterializeResult(metadata=metadata)
        yield validation_check_result(tally, key)
        yield drift_check_result(table, key)

    return _extract


dimension_assets = [_dimension_asset(t) for t in TABLES if t.strategy in ("full", "merge")]

extraction_assets = [raw_credit_histories, raw_consistent_cut, *dimension_assets]
