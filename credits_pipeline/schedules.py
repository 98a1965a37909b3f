"""Jobs, the daily schedule and freshness policies: what keeps the warehouse current.

One job materializes everything the nightly run needs — the ledger's newest closed day, the
consistent cut (users and the open ledger), the dimension tables, the dbt models and the
reconciliation — and the same job, run over a partition range, is the first full load (the
ledger's single-run backfill policy turns a range into one run). The schedule fires at 03:00 UTC,
after the application's 02:15 UTC monthly credit release, for the previous UTC day. Freshness
policies tell the UI (and the alert sensor, through freshness state changes) when the raw ledger or
a mart has not been refreshed for more than a day and two hours.
"""

import datetime as dt

import dagster as dg

from credits_pipeline.extract.assets import LEDGER_PARTITIONS

DAILY_JOB_NAME = "credits_daily"
DAILY_SCHEDULE_NAME = "credits_daily_at_0300_utc"
DAILY_CRON = "0 3 * * *"
SCHEDULE_TIMEZONE = "UTC"
# A day between daily runs plus two hours for the run: the freshness policies' failure window and
# the most the warehouse's ledger may trail the source (`extract/lag.py`).
FRESHNESS_FAIL_WINDOW = dt.timedelta(hours=26)
FRESHNESS_WARN_WINDOW = dt.timedelta(hours=25)

# Everything that can be materialized: external source tables are observed, not materialized.
DAILY_SELECTION = dg.AssetSelection.all()

daily_job = dg.define_asset_job(
    DAILY_JOB_NAME,
    selection=DAILY_SELECTION,
    partitions_def=LEDGER_PARTITIONS,
    description="Extract the previous UTC day of the ledger, the consistent cut and the dimension "
    "tables; build the dbt models; reconcile the ledger. Over a partition range: a full (re)load.",
)


def previous_partition_key(scheduled_time: dt.datetime) -> str:
    """The partition a run scheduled at `scheduled_time` loads: the previous UTC day."""
    utc = scheduled_time.astimezone(dt.UTC) if scheduled_time.tzinfo else scheduled_time
    return (utc.date() - dt.timedelta(days=1)).isoformat()


@dg.schedule(
    name=DAILY_SCHEDULE_NAME,
    job=daily_job,
    cron_schedule=DAILY_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:00 UTC daily, after the application's 02:15 UTC monthly release.",
)
def daily_schedule(context: dg.ScheduleEvaluationContext):
    key = previous_partition_key(context.scheduled_execution_time)
    return dg.RunRequest(run_key=key, partition_key=key)


def daily_freshness_policy() -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=FRESHNESS_FAIL_WINDOW, warn_window=FRESHNESS_WARN_WINDOW
    )
