"""Observing `syllaby_v2`: how many rows each source table holds, and how new its newest row is.

The source tables are external assets: Dagster never writes them, so without an observation the
UI shows each as "Missing" and cannot tell whether the source moved since the last extraction.
The observation reads, for every contract table and inside one consistent snapshot (the same
`SourceDatabase.consistent_snapshot` the extraction uses, so the eleven counts are of one moment),
the row count and the newest `created_at` (when the table has the column: an older application
schema may lack it), records both as metadata and derives the table's data version from them. A
table whose count and newest row did not change keeps its version, and each raw materialization
records the version of the source it was built from (`dagster/input_data_version/...`), so the UI
can tell a raw table whose source moved since from one that is current. Only counts and a
timestamp leave the source — no row, no personal data — the SQL names quoted identifiers and binds
no value, and an error is one redacted line (`source/reader.py`, `redaction.py`), like every other
source error.

When it runs, and why there:
- `syllaby_v2_observe_at_0250_utc` runs `syllaby_v2_observe` at 02:50 UTC, ten minutes before the
  daily run, so every morning the source tables show what the source held just before the night's
  extraction;
- `credits-pipeline materialize` observes first, in a run of its own, so a run from a terminal
  (and `make materialize` on the demo) leaves the source observed next to what it extracted;
- from the UI: "Observe" on a source table's page, or the job's launchpad, at any time.
It is a job of its own, not a step of the daily job: an observation that fails must never hold
back an extraction (the extraction reads the source itself and reports its own errors), and the
daily run's summary counts materializations only. The counts are exact (`count(*)`): on a large
ledger a scan of an index, seconds once a day on the replica the pipeline already reads.
"""

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa

from credits_pipeline.extract.assets import source_errors_as_failure, source_table_specs
from credits_pipeline.names import source_key
from credits_pipeline.source.reader import SourceDatabase, SourceError, _first_line
from credits_pipeline.source.tables import TABLES, Table

OBSERVE_ASSET_NAME = "observe_syllaby_v2"
OBSERVE_JOB_NAME = "syllaby_v2_observe"
OBSERVE_SCHEDULE_NAME = "syllaby_v2_observe_at_0250_utc"
OBSERVE_CRON = "50 2 * * *"  # ten minutes before the daily run (schedules.DAILY_CRON)

ROW_COUNT_METADATA = "dagster/row_count"
NEWEST_CREATED_AT_METADATA = "newest_created_at"
CREATED_AT = "created_at"


@dataclass(frozen=True)
class TableObservation:
    """What one observation saw of a source table: its rows and its newest `created_at`.

    `newest_created_at` is None when the table has no such column or no dated row; `newest_text`
    keeps a value the driver returned as text that is not a timestamp (SQLite stores text), so the
    data version still moves with it.
    """

    table: str
    rows: int
    has_created_at: bool
    newest_created_at: dt.datetime | None = None
    newest_text: str | None = None

    @property
    def data_version(self) -> dg.DataVersion:
        if not self.has_created_at:
            return dg.DataVersion(f"rows={self.rows}")
        newest = (
            self.newest_created_at.isoformat(sep=" ")
            if self.newest_created_at is not None
            else (self.newest_text or "none")
        )
        return dg.DataVersion(f"rows={self.rows};{CREATED_AT}={newest}")

    @property
    def metadata(self) -> dict[str, dg.MetadataValue]:
        meta: dict[str, dg.MetadataValue] = {ROW_COUNT_METADATA: dg.MetadataValue.int(self.rows)}
        if self.newest_created_at is not None:
            meta[NEWEST_CREATED_AT_METADATA] = dg.MetadataValue.timestamp(
                self.newest_created_at.replace(tzinfo=dt.UTC)
            )
        return meta


def _as_timestamp(value: object) -> tuple[dt.datetime | None, str | None]:
    """A driver's `max(created_at)` as a naive UTC datetime, or the text it could not read."""
    if value is None or isinstance(value, dt.datetime):
        return value, None
    try:
        return dt.datetime.fromisoformat(str(value)).replace(tzinfo=None), None
    except ValueError:
        return None, str(value)


def observe_table(conn: sa.Connection, table: Table) -> TableObservation:
    """Count the table's rows and read its newest `created_at` on `conn` (one statement)."""
    try:
        present = {c["name"].lower() for c in sa.inspect(conn).get_columns(table.name)}
    except sa.exc.NoSuchTableError:
        present = set()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(
            f"syllaby_v2.{table.name}: cannot read the table's columns: {_first_line(exc)}"
        ) from None
    if not present:
        raise SourceError(
            f"syllaby_v2.{table.name}: the table does not exist in the source database"
        )
    quote = conn.dialect.identifier_preparer.quote
    has_created_at = CREATED_AT in present
    items = ["count(*)", *([f"max({quote(CREATED_AT)})"] if has_created_at else [])]
    try:
        row = conn.execute(sa.text(f"SELECT {', '.join(items)} FROM {quote(table.name)}")).one()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(
            f"syllaby_v2.{table.name}: observing failed: {_first_line(exc)}"
        ) from None
    newest, text = _as_timestamp(row[1]) if has_created_at else (None, None)
    return TableObservation(table.name, int(row[0]), has_created_at, newest, text)


@dg.multi_observable_source_asset(
    specs=source_table_specs,
    name=OBSERVE_ASSET_NAME,
    description="Row count and newest created_at of every syllaby_v2 table, in one snapshot.",
)
def source_observation(context: dg.AssetExecutionContext, source: SourceDatabase):
    """Observe every table the source has; a missing one fails the step after the others."""
    problems: list[str] = []
    with source_errors_as_failure(), source.consistent_snapshot() as (conn, _cut):
        for table in TABLES:
            try:
                seen = observe_table(conn, table)
            except SourceError as exc:
                problems.append(str(exc))
                continue
            yield dg.ObserveResult(
                asset_key=source_key(table.name),
                metadata=seen.metadata,
                data_version=seen.data_version,
            )
    context.log.info(f"observed {len(TABLES) - len(problems)} table(s) of {source.display_name()}")
    if problems:
        raise dg.Failure(description="; ".join(problems), allow_retries=False)


observe_job = dg.define_asset_job(
    OBSERVE_JOB_NAME,
    selection=dg.AssetSelection.assets(*(spec.key for spec in source_table_specs)),
    description="Observe syllaby_v2: row count and newest created_at of every table (no row "
    "leaves the source).",
)

observe_schedule = dg.ScheduleDefinition(
    name=OBSERVE_SCHEDULE_NAME,
    job=observe_job,
    cron_schedule=OBSERVE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="02:50 UTC daily, ten minutes before the daily run: the source as the night's "
    "extraction will find it.",
)
