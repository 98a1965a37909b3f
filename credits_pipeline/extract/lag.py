"""How far the warehouse's ledger trails the source: the newest `created_at` on both sides.

Freshness policies say when an asset was last *materialized*; they cannot see a run that succeeded
while reading an idle replica, or a source that kept writing for hours after the cut. This check
asks the source itself for its newest ledger timestamp (ignoring values later than now, which
`timestamp_order` reports) and compares it with the newest one in the warehouse. It runs after
every consistent cut and, on its own, every hour.

Next to it, the source-staleness check asks a different question: is the *source* still being
written? When the application stops writing the ledger (an outage, a replica that stopped
replicating, a URL pointing at an old copy), the warehouse can be perfectly level with a dead
source, and every activity mart then calls every user inactive. The check warns when the source's
newest ledger row is older than `CREDITS_SOURCE_STALE_AFTER_HOURS` (48 h by default).

How much of the source they read. The contract gives the ledger no index on `created_at`, so
`max(created_at)` scans it whole — twice after every cut and twice an hour. Both checks run after
a cut the warehouse stored: the source's rows at or below that cut's highest id are the rows the
warehouse read, so the source's newest `created_at` is the newer of the warehouse's newest and
the newest among the ids above it, a primary-key range (`newest_ledger_rows`). When the source's
highest id is below the cut's (a restored or wrong copy: what the staleness check is for), or no
cut is stored yet, the source is asked whole. What this gives up: a row at or below the cut's id
whose `created_at` was rewritten to a later time after it was read, until the next cut reads it.
"""

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from credits_pipeline import check_metadata as cm
from credits_pipeline import settings
from credits_pipeline.extract.assets import OPEN_KEY, source_errors_as_failure
from credits_pipeline.extract.fingerprint import source_max_id
from credits_pipeline.names import LEDGER_LAG_CHECK, OPEN_LEDGER_TABLE
from credits_pipeline.runbook import STALE_SOURCE_ANCHOR, runbook_link
from credits_pipeline.schedules import FRESHNESS_FAIL_WINDOW
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.warehouse.interface import WarehouseParam
from credits_pipeline.warehouse.raw_tables import CUTOFF_RELATION
from credits_pipeline.warehouse.session import MISSING_RELATION

MAX_LAG = FRESHNESS_FAIL_WINDOW  # the daily run's cadence and slack, as the freshness policies
LAG_CHECK_JOB_NAME = "ledger_lag_check"
LAG_SCHEDULE_NAME = "ledger_lag_hourly"
SOURCE_STALENESS_CHECK = "source_ledger_staleness"
SOURCE_READ_METADATA = "source_rows_read"  # which ledger rows the check asked the source about


def ledger_lag(
    source_newest: dt.datetime | None, warehouse_newest: dt.datetime | None
) -> dt.timedelta | None:
    """The warehouse's delay behind the source; None when the source has no dated row at all."""
    if source_newest is None:
        return None
    if warehouse_newest is None:
        return dt.timedelta.max
    return max(source_newest - warehouse_newest, dt.timedelta(0))


def source_age(source_newest: dt.datetime | None, now: dt.datetime) -> dt.timedelta | None:
    """How old the source's newest ledger row is; None when the source has no dated row at all."""
    if source_newest is None:
        return None
    return max(now - source_newest, dt.timedelta(0))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def newer(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The later of two optional timestamps (None when both are)."""
    return b if a is None else a if b is None else max(a, b)


def source_newest_created_at(
    source: SourceDatabase, now: dt.datetime, after_id: int | None = None
) -> tuple[dt.datetime | None, int | None]:
    """The source's newest ledger `created_at` up to now (later ones are `timestamp_order`'s),
    among ids above `after_id` when given — unless the source's highest id is below it (then the
    whole ledger). Returns it with the bound actually used (None: the whole ledger)."""
    with source_errors_as_failure(), source.connect() as conn:
        if after_id is not None and source_max_id(conn) < after_id:
            after_id = None
        where = "created_at <= :now" + ("" if after_id is None else " AND id > :after_id")
        params: dict[str, object] = {"now": now}
        if after_id is not None:
            params["after_id"] = after_id
        newest = conn.execute(
            sa.text(f"SELECT max(created_at) FROM {CREDIT_HISTORIES.name} WHERE {where}"),
            params,
        ).scalar_one()
    if isinstance(newest, str):  # SQLite keeps timestamps as text
        newest = dt.datetime.fromisoformat(newest)
    return newest, after_id


def warehouse_newest(
    warehouse: WarehouseParam, now: dt.datetime
) -> tuple[dt.datetime | None, int | None]:
    """The warehouse's newest ledger `created_at` up to now, and the last cut's highest id (both
    None before the first run: the staleness check still answers, from the whole source)."""
    with warehouse.session_if_exists() as con:
        if con is None:
            return None, None
        try:
            newest = con.execute(
                f"""
                select max(created_at) from (
                    select created_at from raw.{CREDIT_HISTORIES.name}
                    union all select created_at from raw.{OPEN_LEDGER_TABLE}
                ) where created_at <= ?
                """,
                [now],
            ).fetchone()[0]
            row = con.execute(f"select max(ledger_closed_max_id) from {CUTOFF_RELATION}").fetchone()
        except MISSING_RELATION:
            return None, None
    return newest, (None if row is None or row[0] is None else int(row[0]))


def newest_ledger_rows(
    source: SourceDatabase, warehouse: WarehouseParam, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None, str]:
    """(the source's newest `created_at`, the warehouse's, what was read of the source): the
    source's rows above the last cut's highest id, the rest as the warehouse read them."""
    held, cut_max_id = warehouse_newest(warehouse, now)
    above, bound = source_newest_created_at(source, now, cut_max_id)
    if bound is None:
        return above, held, "the whole ledger"
    return newer(above, held), held, f"ids above {bound} (the rest as the last cut read them)"


@dg.asset_check(
    asset=OPEN_KEY,
    name=SOURCE_STALENESS_CHECK,
    description=(
        "[WARN] The source's newest ledger `created_at` is older than "
        f"`{settings.SOURCE_STALE_AFTER_HOURS_VAR}` (48 h by default): the application stopped "
        f"writing credits or the source is a stale copy. What to do: "
        f"{runbook_link(STALE_SOURCE_ANCHOR)}"
    ),
)
def source_staleness_check(
    source: SourceDatabase, warehouse: WarehouseParam
) -> dg.AssetCheckResult:
    now = _now()
    max_age = settings.source_stale_after()
    newest, _, scope = newest_ledger_rows(source, warehouse, now)
    age = source_age(newest, now)
    hours = None if age is None else round(age.total_seconds() / 3600, 2)
    limit_hours = round(max_age.total_seconds() / 3600, 2)
    if age is None:
        description = "the source's ledger has no dated row: nothing says it is being written"
    elif age > max_age:
        description = (
            f"the source's newest ledger row is {hours} h old (more than {limit_hours} h): "
            "the source looks stale"
        )
    else:
        description = f"the source's newest ledger row is {hours} h old"
    return dg.AssetCheckResult(
        passed=age is not None and age <= max_age,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "source_newest_created_at": dg.MetadataValue.text(str(newest)),
            "source_age_hours": dg.MetadataValue.float(float(hours if hours is not None else -1)),
            "stale_after_hours": dg.MetadataValue.float(float(limit_hours)),
            SOURCE_READ_METADATA: dg.MetadataValue.text(scope),
            cm.RUNBOOK: dg.MetadataValue.url(runbook_link(STALE_SOURCE_ANCHOR)),
        },
    )


@dg.asset_check(
    asset=OPEN_KEY,
    name=LEDGER_LAG_CHECK,
    description="Newest ledger `created_at` in the source vs the warehouse; fails when the "
    f"warehouse trails by more than {MAX_LAG}.",
)
def ledger_lag_check(source: SourceDatabase, warehouse: WarehouseParam) -> dg.AssetCheckResult:
    now = _now()
    source_newest, held_newest, scope = newest_ledger_rows(source, warehouse, now)
    lag = ledger_lag(source_newest, held_newest)
    passed = lag is None or lag <= MAX_LAG
    hours = None if lag is None or lag == dt.timedelta.max else round(lag.total_seconds() / 3600, 2)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"warehouse trails the source by {hours if hours is not None else 'everything'} hour(s)"
        )
        if lag
        else "warehouse is level with the source",
        metadata={
            "source_newest_created_at": dg.MetadataValue.text(str(source_newest)),
            "warehouse_newest_created_at": dg.MetadataValue.text(str(held_newest)),
            "lag_hours": dg.MetadataValue.float(float(hours or 0.0)),
            SOURCE_READ_METADATA: dg.MetadataValue.text(scope),
        },
    )


lag_check_job = dg.define_asset_job(
    LAG_CHECK_JOB_NAME,
    selection=dg.AssetSelection.checks(ledger_lag_check, source_staleness_check),
    description="The ledger lag and source staleness checks alone.",
)

lag_schedule = dg.ScheduleDefinition(
    name=LAG_SCHEDULE_NAME,
    job=lag_check_job,
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
