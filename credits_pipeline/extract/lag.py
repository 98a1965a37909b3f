"""How far the warehouse's ledger trails the source: the newest `created_at` on both sides.

Freshness policies say when an asset was last *materialized*; they cannot see a run that succeeded
while reading an idle replica, or a source that kept writing for hours after the cut. This check
asks the source itself for its newest ledger timestamp (ignoring values later than now, which
`timestamp_order` reports) and compares it with the newest one in the warehouse. It runs after
every consistent cut and, on its own, every hour.
"""

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from credits_pipeline.extract.assets import OPEN_KEY, source_errors_as_failure
from credits_pipeline.names import LEDGER_LAG_CHECK
from credits_pipeline.source.reader import SourceDatabase
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline.warehouse.raw_tables import OPEN_LEDGER

MAX_LAG = dt.timedelta(hours=26)
LAG_CHECK_JOB_NAME = "ledger_lag_check"
LAG_SCHEDULE_NAME = "ledger_lag_hourly"


def ledger_lag(source_newest: dt.datetime | None, warehouse_newest: dt.datetime | None) -> dt.timedelta | None:
    """The warehouse's delay behind the source; None when the source has no dated row at all."""
    if source_newest is None:
        return None
    if warehouse_newest is None:
        return dt.timedelta.max
    return max(source_newest - warehouse_newest, dt.timedelta(0))


@dg.asset_check(
    asset=OPEN_KEY,
    name=LEDGER_LAG_CHECK,
    description=f"Newest ledger `created_at` in the source vs the warehouse; fails when the warehouse "
    f"trails by more than {MAX_LAG}.",
)
def ledger_lag_check(source: SourceDatabase, warehouse: DuckDBWarehouse) -> dg.AssetCheckResult:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with source_errors_as_failure(), source.connect() as conn:
        source_newest = conn.execute(
            sa.text(f"SELECT max(created_at) FROM {CREDIT_HISTORIES.name} WHERE created_at <= :now"), {"now": now}
        ).scalar_one()
    if isinstance(source_newest, str):  # SQLite keeps timestamps as text
        source_newest = dt.datetime.fromisoformat(source_newest)
    with warehouse.connect(read_only=True) as con:
        warehouse_newest = con.execute(  # type: ignore[index]
            f"""
            select max(created_at) from (
                select created_at from raw.{CREDIT_HISTORIES.name}
                union all select created_at from raw.{OPEN_LEDGER}
            ) where created_at <= ?
            """,
            [now],
        ).fetchone()[0]
    lag = ledger_lag(source_newest, warehouse_newest)
    passed = lag is None or lag <= MAX_LAG
    hours = None if lag is None or lag == dt.timedelta.max else round(lag.total_seconds() / 3600, 2)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"warehouse trails the source by {hours if hours is not None else 'everything'} hour(s)"
        if lag
        else "warehouse is level with the source",
        metadata={
            "source_newest_created_at": dg.MetadataValue.text(str(source_newest)),
            "warehouse_newest_created_at": dg.MetadataValue.text(str(warehouse_newest)),
            "lag_hours": dg.MetadataValue.float(float(hours or 0.0)),
        },
    )


lag_check_job = dg.define_asset_job(
    LAG_CHECK_JOB_NAME, selection=dg.AssetSelection.checks(ledger_lag_check), description="The ledger lag check alone."
)

lag_schedule = dg.ScheduleDefinition(
    name=LAG_SCHEDULE_NAME,
    job=lag_check_job,
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
