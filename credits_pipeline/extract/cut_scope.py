"""How much of the source's ledger a read takes: a full check, or the primary-key ranges of a day.

Why this module exists: the contract gives `credit_histories` no index on `created_at` (only
`(user_id, created_at)`), so every filter on days — a partition's day, the open day, the
fingerprint of every closed day — made MySQL and PostgreSQL scan the whole ledger, several times a
run: the daily run read about 400 times the day's rows. The warehouse knows which ids it read last
time, so an ordinary run can ask the source for id ranges instead (the primary key is clustered in
InnoDB): the rows above the last snapshot's highest id, and the few ranges the warehouse says the
open and recently closed days start at. `extract/fingerprint.py` holds the pure reasoning
(`recent_check`, `synthesized_source_days`, `bounded_cut_where`); this module puts it together
with what the warehouse stored, for the two ledger assets in `extract/assets.py`.

What an ordinary run gives up: a row rewritten in place or deleted in a closed day older than
`CREDITS_LEDGER_RECHECK_DAYS` is found by the next full check (every
`CREDITS_LEDGER_FULL_CHECK_DAYS` days, and the first cut), not by the next day's run. Rows
written late are found every run, by id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.extract.common import ExtractionTally, stage_batches
from credits_pipeline.extract.fingerprint import DEFINITION as FINGERPRINT_DEFINITION
from credits_pipeline.extract.fingerprint import (
    MAX_OPEN_IDS_LISTED,
    ClosedDaysPlan,
    bounded_cut_where,
    closed_range_read_from,
    cut_where,
    days_that_lost_rows,
    fingerprint_bounds,
    full_check_due,
    id_range_where,
    plan_closed_days,
    recent_check,
    recent_plan_is_complete,
    source_day_fingerprints,
    synthesized_source_days,
)
from credits_pipeline.extract.read_fingerprint import ReadFingerprints
from credits_pipeline.ledger_fingerprint import DayFingerprint, StoredFingerprint
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.warehouse.raw_tables import (
    OPEN_PARTITION_LABEL,
    Stager,
    StoredCut,
    closed_days_first_id,
    first_id_created_between,
    last_full_check,
    open_rows_below,
    open_rows_first_id,
    open_rows_without_day,
    stored_cut,
    stored_ledger_fingerprints,
)

FULL_CHECK = "full"
RECENT_CHECK = "recent"
LATE_COMMIT_LOOKBACK = dt.timedelta(minutes=30)
"""How long a transaction may hold an inserted ledger row before committing it: the ids handed
out that long before the previous cut are read again, for rows that committed after it."""


def late_commit_floor(con, previous_cut: StoredCut) -> int:
    """The first id of the rows created in the `LATE_COMMIT_LOOKBACK` before the previous cut
    (its highest + 1 when there were none): a row committed after that cut with an id handed out
    in that time has an id at or above it."""
    first = first_id_created_between(
        con, previous_cut.cutoff_at - LATE_COMMIT_LOOKBACK, previous_cut.cutoff_at
    )
    return previous_cut.max_id + 1 if first is None else min(first, previous_cut.max_id + 1)


@dataclass(frozen=True)
class CutScope:
    """What the consistent cut compares and reads.

    - `check`: `FULL_CHECK` (every closed day compared; the read filters on days) or
      `RECENT_CHECK` (the days from `recheck_from` compared; the read is id ranges);
    - `why_full`: why a full check ran (empty for a recent one);
    - `source_days`: the source's fingerprints per day and bound, as `plan_closed_days` takes them;
    - `where`/`params`: the ledger read's WHERE clause and bound parameters;
    - `read_from_id`: the read's first id (None: not limited).
    """

    check: str
    why_full: str
    plan: ClosedDaysPlan
    source_days: dict[dt.date, dict[int, DayFingerprint]]
    where: str
    params: dict[str, object]
    read_from_id: int | None
    recheck_from: dt.date | None
    staged: bool = False


@dataclass(frozen=True)
class RecentRead:
    """The one source read of a recent check, asked of the caller (`plan_cut`'s `read_recent`).

    Why: a recent check used to ask the source for the fingerprints of the ids from
    `check.min_id` on (an aggregate scanning the re-checked days, the open day and every row
    written since), then read the cut's rows from the same ids again — twice the re-checked days'
    rows for the server. Instead the caller reads every row of `where` (ids from `min_id` on,
    and the stored open rows below it listed by id: `open_rows_below`) into the open slice's
    stage, sums the fingerprints of the ids from `min_id` on dated before `to_day` at `bounds` as
    they stream (`extract/read_fingerprint.py`), and returns them, or None when it cannot (a row
    quarantined: its share is unknown; the caller then empties the stage, and the source's
    aggregate is asked instead). The stage then holds a superset of the cut's read
    (`CutScope.where`): its rows from `min_id` on are all there, and below it the cut reads only
    open rows — the last cut's open slice held every one of them, except one rewritten into the
    open day or the future since, which a recent check leaves to the next full check like any
    rewrite of an older day. The caller keeps the rows of that WHERE and drops the rest: rows of
    closed days the warehouse holds already.
    """

    where: str
    params: dict[str, object]
    bounds: list[int]
    to_day: dt.date
    min_id: int


ReadRecent = Callable[[RecentRead], dict[dt.date, dict[int, DayFingerprint]] | None]


def _full(
    conn: sa.Connection,
    stored: Mapping[dt.date, StoredFingerprint],
    closed_before: dt.datetime,
    snapshot_max_id: int,
    why: str,
) -> CutScope:
    bounds = fingerprint_bounds(stored, closed_before.date(), snapshot_max_id)
    source_days = source_day_fingerprints(conn, bounds, None, closed_before.date())
    plan = plan_closed_days(stored, source_days, closed_before.date(), snapshot_max_id)
    where, params = cut_where(plan, closed_before)
    return CutScope(FULL_CHECK, why, plan, source_days, where, params, None, None)


def plan_cut(
    conn: sa.Connection,
    con,
    stored: Mapping[dt.date, StoredFingerprint],
    closed_before: dt.datetime,
    cutoff: dt.datetime,
    snapshot_max_id: int,
    read_recent: ReadRecent | None = None,
) -> CutScope:
    """Choose the cut's check and build its fingerprints, plan and read (inside the snapshot).

    With `read_recent`, a recent check reads the source once through it (`RecentRead`); the
    scope then says `staged`: its rows are in the stage, a superset to narrow to `where`. A full
    check never reads through it: it filters the source on days, and its fingerprints cover
    every closed day.

    A recent check falls back to a full one whenever it could not read exactly what a full check
    reads (a day never read before, a changed day outside the re-checked ones, too many open rows
    without a day), and whenever the source looks truncated or restored (a re-checked day lost
    rows, the highest id fell), so the shrink guard weighs the whole ledger: a full check is
    always correct, only dearer.
    """
    last = last_full_check(con)
    if full_check_due(last, cutoff, settings.ledger_full_check_days()):
        why = (
            "no full check yet"
            if last is None
            else f"last full check {last:%Y-%m-%d %H:%M} UTC"
            f" ({settings.LEDGER_FULL_CHECK_DAYS_VAR}={settings.ledger_full_check_days()})"
        )
        return _full(conn, stored, closed_before, snapshot_max_id, why)
    previous_cut = stored_cut(con)
    if previous_cut is None:
        return _full(conn, stored, closed_before, snapshot_max_id, "no previous cut")
    closed_day = closed_before.date()
    recheck_from = closed_day - dt.timedelta(days=settings.ledger_recheck_days())
    late_floor = late_commit_floor(con, previous_cut)
    recent_first = closed_days_first_id(con, recheck_from, closed_day)
    check = recent_check(
        stored,
        closed_day,
        recheck_from,
        late_floor if recent_first is None else min(recent_first, late_floor),
        snapshot_max_id,
    )
    bounds = fingerprint_bounds(stored, closed_day, snapshot_max_id)
    open_first = open_rows_first_id(con, closed_before)
    counted = None
    if read_recent is not None:
        # One read of everything the cut may need, fingerprinted as it streams (see `RecentRead`).
        below = open_rows_below(con, check.min_id)
        if len(below) <= MAX_OPEN_IDS_LISTED:
            where, params = id_range_where(check.min_id, below)
            counted = read_recent(RecentRead(where, params, bounds, closed_day, check.min_id))
    staged = counted is not None
    if counted is None:
        counted = source_day_fingerprints(conn, bounds, None, closed_day, min_id=check.min_id)
    source_days = synthesized_source_days(stored, counted, check, closed_day, bounds)
    if source_days is None:
        return _full(conn, stored, closed_before, snapshot_max_id, "a closed day never read")
    plan = plan_closed_days(stored, source_days, closed_day, snapshot_max_id)
    if not recent_plan_is_complete(plan, check):
        return _full(conn, stored, closed_before, snapshot_max_id, "an older closed day changed")
    if days_that_lost_rows(plan, stored, source_days):
        return _full(conn, stored, closed_before, snapshot_max_id, "rows deleted from a closed day")
    if snapshot_max_id < previous_cut.max_id:
        return _full(conn, stored, closed_before, snapshot_max_id, "the source's highest id fell")
    # The read's first id: above the late mark, the ids handed out just before the previous cut
    # (rows it could not see yet), the re-read days' first id, the open rows' first.
    firsts = [plan.late_after_id + 1, late_floor]
    if plan.changed:
        firsts.append(check.min_id)
    if open_first is not None:
        firsts.append(open_first)
    read_from = min(firsts)
    listed = open_rows_without_day(con, read_from)
    if len(listed) > MAX_OPEN_IDS_LISTED:
        return _full(conn, stored, closed_before, snapshot_max_id, "many open rows without a day")
    where, params = cut_where(plan, closed_before)
    where, params = bounded_cut_where(where, params, read_from, listed)
    return CutScope(
        RECENT_CHECK, "", plan, source_days, where, params, read_from, recheck_from, staged
    )


def partition_read_from(con, start: dt.datetime, end: dt.datetime) -> int | None:
    """The first id a partition run for [start, end) needs to read (None: the whole ledger).

    Why: the last cut's open slice held every row dated from its `closed_before` on that had
    committed, up to its highest id; a day at or after that `closed_before` therefore has no row
    below the lowest id the open slice holds for it, other than rows committed after that cut
    with ids handed out shortly before it (`late_commit_floor`). Days that cut had closed already
    (a second catch-up the same day takes the newest closed day again) are read from their first
    id in the warehouse when the ordinary cut re-checks them (`closed_range_read_from`); older
    days (a backfill) are read by their dates, the whole ledger scanned.
    """
    previous_cut = stored_cut(con)
    if previous_cut is None:
        return None
    floor = late_commit_floor(con, previous_cut)
    if start < previous_cut.closed_before:
        days = [
            start.date() + dt.timedelta(days=i) for i in range((end.date() - start.date()).days)
        ]
        recheck_from = previous_cut.closed_before.date() - dt.timedelta(
            days=settings.ledger_recheck_days()
        )
        return closed_range_read_from(
            days,
            stored_ledger_fingerprints(con, FINGERPRINT_DEFINITION),
            recheck_from,
            closed_days_first_id(con, start.date(), end.date()),
            floor,
        )
    first = open_rows_first_id(con, start, end)
    return floor if first is None else min(first, floor)


class RecentReader:
    """The consistent cut's one read for a recent check (`RecentRead`), on the open slice's stager.

    `read` stages every row of the read and returns the fingerprints summed from its batches, or
    None (stage emptied) when a row was quarantined; `narrow` keeps the rows the cut needs;
    `discard` empties the stage when the cut read otherwise after all (a full check it fell back
    to). The counts say what the read cost: `already_held` rows read and dropped as the warehouse
    holds them, `discarded_rows` rows read for nothing before a fallback.
    """

    def __init__(self, source: SourceDatabase, conn: sa.Connection, stager: Stager) -> None:
        self.source, self.conn, self.stager = source, conn, stager
        self.tally: ExtractionTally | None = None
        self.discarded_rows = 0
        self.already_held = 0

    def read(self, wanted: RecentRead) -> dict[dt.date, dict[int, DayFingerprint]] | None:
        prints = ReadFingerprints(wanted.bounds, to_day=wanted.to_day, min_id=wanted.min_id)
        try:
            self.tally = stage_batches(
                self.stager,
                self.source.read_batches(self.conn, CREDIT_HISTORIES, wanted.where, wanted.params),
                label=OPEN_PARTITION_LABEL,
                on_batch=prints.add,
            )
        finally:
            prints.close()
        if self.stager.stats.rejected:  # the tally's own count is only set at the swap
            self.discard()
            return None
        return prints.result()

    def narrow(self, where: str, params: dict[str, object]) -> ExtractionTally:
        if self.tally is None:
            raise RuntimeError("narrow() needs a staged read")
        self.already_held = self.stager.keep_only(where, params)
        return self.tally

    def discard(self) -> None:
        if self.tally is not None:
            self.discarded_rows += self.tally.rows_read
            self.tally = None
            self.stager.restart()
