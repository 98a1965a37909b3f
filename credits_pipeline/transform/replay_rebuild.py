"""When a dbt step must rebuild its incremental models instead of resuming them.

dbt's replay (int_credit_replay_delta → int_credit_replay → marts.user_credit_daily) resumes from
what it stored. It sees every row that is new or changed (the consistent cut keeps rows written
late and rows of closed days rewritten in place in the open slice for the run that finds them),
but a row that is *gone* — deleted from the source in a closed or open day, or now quarantined —
leaves nothing to see: the stored replay would keep it for ever. Ledgers are append-only, so a
vanished row is rare and is news; when the replay holds rows the raw ledger no longer has, the
credits step rebuilds its incremental models from the whole ledger (`dbt build --full-refresh`),
and the marts step rebuilds the daily mart when the replay's log was rebuilt after the mart last
took it in. Both reports — the reconciliation and every mart — then say the same thing.

Each step looks at the warehouse itself, not at a flag: a step that was skipped or failed still
rebuilds on its next run, and a step that rebuilt does not rebuild again. The checks read ids
only (on BigQuery: the id columns of the ledger and of the replay, ~16 bytes a row).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from credits_pipeline.names import OPEN_LEDGER_TABLE
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.warehouse import session

# The incremental relations dbt resumes from (names as in dbt_transform/models).
REPLAY_RELATION = "credits.int_credit_replay"
REPLAY_LOG_RELATION = "credits.int_credit_replay_delta"
DAILY_MART_RELATION = "marts.user_credit_daily"
SHOWN_DAYS = 5


VANISHED_ROWS_SQL = f"""
select distinct replayed.balance_date
from {REPLAY_RELATION} as replayed
where not exists (
        select 1 from raw.{CREDIT_HISTORIES.name} as closed_rows
        where closed_rows.id = replayed.credit_history_id
    )
    and not exists (
        select 1 from raw.{OPEN_LEDGER_TABLE} as open_rows
        where open_rows.id = replayed.credit_history_id
    )
order by 1
"""


def days_with_vanished_rows(con) -> list[dt.date]:
    """The days of replayed rows the raw ledger no longer holds, oldest first.

    Empty when the replay does not exist yet: its first build is a full one anyway.
    """
    try:
        rows = con.execute(VANISHED_ROWS_SQL).fetchall()
    except session.MISSING_RELATION:
        return []
    return [_as_date(r[0]) for r in rows]


def replay_log_rebuilt_since_mart(con) -> bool:
    """True when the replay's log was rebuilt after the daily mart's newest replay run.

    The log keeps every run (no retention), so its oldest run is older than the mart's watermark
    unless the log was rebuilt from the whole ledger since the mart last took it in.
    """
    try:
        watermark = con.execute(f"select max(replayed_at) from {DAILY_MART_RELATION}").fetchone()
        oldest = con.execute(f"select min(replayed_at) from {REPLAY_LOG_RELATION}").fetchone()
    except session.MISSING_RELATION:
        return False
    if not watermark or watermark[0] is None or not oldest or oldest[0] is None:
        return False
    return _naive_utc(oldest[0]) > _naive_utc(watermark[0])


def replay_rebuild_reason(days: Sequence[dt.date]) -> str | None:
    """One line for the credits step's log and metadata, or None when nothing forces a rebuild."""
    if not days:
        return None
    shown = ", ".join(d.isoformat() for d in days[:SHOWN_DAYS])
    more = " …" if len(days) > SHOWN_DAYS else ""
    return (
        f"{REPLAY_RELATION} holds rows the ledger no longer has, on {len(days)} day(s) "
        f"({shown}{more}): rebuilding the replay from the whole ledger (--full-refresh)"
    )


DAILY_MART_REBUILD_REASON = (
    f"{REPLAY_LOG_RELATION} was rebuilt from the whole ledger after {DAILY_MART_RELATION} last "
    "took it in: rebuilding the daily mart too (--full-refresh)"
)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def replay_must_rebuild(con) -> str | None:
    """The credits step's reason to rebuild, or None (it resumes)."""
    return replay_rebuild_reason(days_with_vanished_rows(con))


def daily_mart_must_rebuild(con) -> str | None:
    """The marts step's reason to rebuild, or None (it resumes)."""
    return DAILY_MART_REBUILD_REASON if replay_log_rebuilt_since_mart(con) else None
