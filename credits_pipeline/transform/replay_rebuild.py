"""When a dbt step must rebuild its incremental models instead of resuming them.

dbt's replay (int_credit_replay_delta → int_credit_replay → marts.user_credit_daily) resumes from
what it stored: it reads the ledger partitions from its latest stored day on, so it cannot see a
row rewritten in place or deleted in an older, closed day. The extraction does see those (the
closed days' fingerprints, extract/fingerprint.py) and logs every changed day it read again in
`raw._ledger_edits`. Ledgers are append-only, so such an edit is rare and is news: the step whose
incremental models took in a replay older than the newest logged edit rebuilds them from the whole
ledger (`dbt build --full-refresh`), and both reports — the reconciliation and every mart — say
the same thing about the edited days. Each step compares the log with its own relation, so a step
that was skipped or failed on the day of the edit still rebuilds on the next run, and a step that
already rebuilt does not rebuild again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
from google.api_core.exceptions import NotFound

from credits_pipeline.warehouse.raw_tables import LEDGER_EDITS

# What DuckDB and BigQuery raise for a relation that does not exist (yet).
MISSING_RELATION = (duckdb.CatalogException, NotFound)

# The incremental relation each dbt step resumes from; its `replayed_at` is the newest replay run
# it took in (macros/incremental_runs.sql).
REPLAY_RELATION = "credits.int_credit_replay"
DAILY_MART_RELATION = "marts.user_credit_daily"


def _newest_replay(con, relation: str) -> dt.datetime | None:
    """The newest `replayed_at` of `relation`; None when it does not exist yet or is empty."""
    try:
        row = con.execute(f"select max(replayed_at) from {relation}").fetchone()
    except MISSING_RELATION:  # not built yet
        return None
    return None if row is None else row[0]


def edited_days_not_taken_in(con, relation: str) -> list[dt.date]:
    """The closed days edited after `relation` last took in a replay run, oldest first.

    Empty when the relation does not exist yet (its first build is a full one anyway), when it is
    empty, or when no edit is newer than its newest replay run.
    """
    newest = _newest_replay(con, relation)
    if newest is None:
        return []
    try:
        rows = con.execute(
            f"select distinct partition_date from {LEDGER_EDITS} where detected_at > ? order by 1",
            [_naive_utc(newest)],
        ).fetchall()
    except MISSING_RELATION:  # a warehouse from before the log: nothing logged
        return []
    return [_as_date(r[0]) for r in rows]


def rebuild_reason(days: Sequence[dt.date], relation: str) -> str | None:
    """One line for the step's log and metadata, or None when nothing forces a rebuild."""
    if not days:
        return None
    shown = ", ".join(d.isoformat() for d in days[:5]) + (" …" if len(days) > 5 else "")
    return (
        f"{len(days)} closed ledger day(s) changed in place after {relation}'s last replay "
        f"({shown}): rebuilding the incremental models from the whole ledger (--full-refresh)"
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
