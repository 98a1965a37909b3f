"""Fingerprints of closed ledger days: how a run notices rows rewritten, deleted or written late.

The ledger is append-only by contract, yet the application rewrites an old row now and then,
may delete one, and commits rows whose `created_at` lies in a day the warehouse closed already.
Re-reading every closed day on every run would find all three, at the cost of the whole history
each day. Instead each closed day keeps a fingerprint of what the warehouse read for it — the row
count, the sum of ids, the sum of user ids and the sum of a per-row fingerprint
(`SOURCE_FINGERPRINT_TERMS`: the replay's inputs, `ledger.replay_state.REPLAY_FINGERPRINT_TERMS`,
and every other column of the row that has a portable rendering) — over the rows with an id at or
below the day's `through_id` (the source's highest id when the day was read). The source computes
the same numbers in one aggregate query (portable SQL, bound parameters, on SQLite, MySQL/MariaDB
and PostgreSQL), and so does the pipeline over the rows a read fetched (`read_fingerprint.py`:
the partition run and a recent check sum their own batches rather than ask the source to scan
the same rows again); a day whose numbers differ was changed in place or lost a row and is read
again; rows above `through_id` are rows written late and are read by id. A row rewritten in place is
found whatever column changed (the application's own writes also move `updated_at`), except text
rewritten to another of the same length without touching `updated_at`: no hash of text is common
to SQLite, MySQL and PostgreSQL. The stored fingerprints carry the definition they were taken with
(`DEFINITION`); under another, the warehouse reads every closed day once more instead of reporting
them all changed.

How much of the source a cut reads (issue 10, item 2). Without an index on `created_at` (the
contract has only `(user_id, created_at)`), a filter on days scans the whole ledger on MySQL and
PostgreSQL. So an ordinary cut re-checks only the most recent closed days and reads the source
by primary key: from the first id of those days, of the open slice, and above the late mark
(`RecentCheck`, `synthesized_source_days`). Every `CREDITS_LEDGER_FULL_CHECK_DAYS` days (and on
the first cut) a full check compares every closed day, scanning the source once, as every cut did
before. A row rewritten or deleted in an older day is therefore found by the next full check, not
the next day; a row written late into any day is found every run, by id.

Nothing here talks to Dagster; `plan_closed_days`, `day_ranges` and the helpers of the recent
check are pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from credits_pipeline.ledger import replay_state

# The fingerprint values themselves live below both this module and the warehouse that stores them
# (`ledger_fingerprint`); they remain importable from here.
from credits_pipeline.ledger_fingerprint import EMPTY as EMPTY
from credits_pipeline.ledger_fingerprint import DayFingerprint as DayFingerprint
from credits_pipeline.ledger_fingerprint import StoredFingerprint as StoredFingerprint

# How each term of a source row's fingerprint reads in the source databases: its DuckDB
# expression (as in `replay_state`) -> (how to render it, column).
_TERM_RENDERING = {
    "id": ("int", "id"),
    "credit_events_id": ("int", "credit_events_id"),
    "event_type": ("int", "event_type"),
    "cast(amount as bigint)": ("int", "amount"),
    "cast(previous_amount as bigint)": ("int", "previous_amount"),
    "epoch_ms(created_at) // 1000": ("epoch_seconds", "created_at"),
    "creditable_id": ("int", "creditable_id"),
    "calculative_index": ("int", "calculative_index"),
    "epoch_ms(updated_at) // 1000": ("epoch_seconds", "updated_at"),
    "event_value": ("int", "event_value"),
    "length(creditable_type)": ("chars", "creditable_type"),
    "length(description)": ("chars", "description"),
    "length(label)": ("chars", "label"),
    "length(cast(meta as varchar))": ("chars", "meta"),
}

# What a closed day's fingerprint sums, row by row: the replay's inputs, the per-user rules'
# inputs that render portably (`creditable_type` is hashed by the warehouse's engine there, which
# the source databases cannot do: its length stands in), and the columns nothing computes on but
# the warehouse copies (so a rewrite of any of them reaches the warehouse by the next check).
# Every weight is below 2^26: each term stays below 2^57 and the fourteen below 2^61.
SOURCE_FINGERPRINT_TERMS = (
    *replay_state.REPLAY_FINGERPRINT_TERMS,
    *(term for term in replay_state.RULE_FINGERPRINT_TERMS if term[0] in _TERM_RENDERING),
    ("event_value", 7_368_787),
    ("length(creditable_type)", 2_654_435),
    ("length(description)", 5_381_003),
    ("length(label)", 12_582_917),
    ("length(cast(meta as varchar))", 25_165_843),
)
# The same per-row fingerprint as a DuckDB expression (what the tests compare every source with).
SOURCE_ROW_FINGERPRINT = replay_state.fingerprint_sql(SOURCE_FINGERPRINT_TERMS)
# The definition stored fingerprints were taken with (`raw_tables.replace_ledger_fingerprints`).
DEFINITION = hashlib.sha256(repr(SOURCE_FINGERPRINT_TERMS).encode()).hexdigest()[:16]

# Per dialect family: an integer cast, whole epoch seconds of a UTC timestamp, its UTC day, and
# the length of a text in characters.
_DIALECT = {
    "sqlite": {
        "int": "CAST({} AS INTEGER)",
        "epoch_seconds": "CAST(strftime('%s', {}) AS INTEGER)",
        "day": "date({})",
        "chars": "LENGTH({})",
    },
    "mysql": {
        "int": "CAST({} AS SIGNED)",
        "epoch_seconds": "TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {})",
        "day": "DATE({})",
        "chars": "CHAR_LENGTH({})",
    },
    "postgresql": {
        "int": "CAST({} AS BIGINT)",
        "epoch_seconds": "CAST(FLOOR(EXTRACT(EPOCH FROM {})) AS BIGINT)",
        "day": "CAST({} AS DATE)",
        "chars": "CHAR_LENGTH(CAST({} AS TEXT))",
    },
}


def source_row_fingerprint(family: str) -> str:
    """`SOURCE_ROW_FINGERPRINT` rendered for a source database (same numbers, row by row)."""
    render = _DIALECT[family]
    prime = replay_state.FINGERPRINT_PRIME
    terms = []
    for expression, weight in SOURCE_FINGERPRINT_TERMS:
        if expression not in _TERM_RENDERING:
            raise ValueError(f"no source rendering for the fingerprint term {expression!r}")
        kind, column = _TERM_RENDERING[expression]
        value = render[kind].format(column)
        terms.append(f"((COALESCE({value}, -1) + 2) % {prime}) * {weight}")
    return f"(({' + '.join(terms)}) % {prime})"


def source_fingerprint_sql(
    conn: sa.Connection, bounds: list[int], from_day: bool, to_day: bool, min_id: bool = False
) -> str:
    """One aggregate over the ledger: per UTC day, a fingerprint for each `through_id` bound.

    Bounds are bound parameters `:b0, :b1, ...`; the day range `:from_day`/`:to_day` (datetimes,
    half-open) is optional on either side, and so is `:min_id` (only ids at or above it: a
    primary-key range, so the source reads those rows only). Rows without a parseable
    `created_at` have no day.
    """
    family = "mysql" if conn.dialect.name in ("mysql", "mariadb") else conn.dialect.name
    render = _DIALECT[family]
    quote = conn.dialect.identifier_preparer.quote
    day = render["day"].format(quote("created_at"))
    row_fp = source_row_fingerprint(family)
    user = f"COALESCE({render['int'].format('user_id')}, -1)"
    sums = []
    for i in range(len(bounds)):
        within = f"id <= :b{i}"
        sums += [
            f"SUM(CASE WHEN {within} THEN 1 ELSE 0 END)",
            f"SUM(CASE WHEN {within} THEN id ELSE 0 END)",
            f"SUM(CASE WHEN {within} THEN {user} ELSE 0 END)",
            f"SUM(CASE WHEN {within} THEN {row_fp} ELSE 0 END)",
        ]
    where = ["created_at IS NOT NULL"]
    if min_id:
        where.insert(0, "id >= :min_id")
    if from_day:
        where.append("created_at >= :from_day")
    if to_day:
        where.append("created_at < :to_day")
    return (
        f"SELECT {day} AS day, {', '.join(sums)} FROM {quote('credit_histories')} "
        f"WHERE {' AND '.join(where)} GROUP BY {day}"
    )


def _as_date(value) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def source_day_fingerprints(
    conn: sa.Connection,
    bounds: Iterable[int],
    from_day: dt.date | None = None,
    to_day: dt.date | None = None,
    min_id: int | None = None,
) -> dict[dt.date, dict[int, DayFingerprint]]:
    """Each source day's fingerprint for each bound, in one scan (days without rows are absent).

    With `min_id`, only rows with an id at or above it count (see `RecentCheck`)."""
    bounds = sorted(set(int(b) for b in bounds))
    if not bounds:
        return {}
    params: dict[str, object] = {f"b{i}": b for i, b in enumerate(bounds)}
    if from_day is not None:
        params["from_day"] = dt.datetime.combine(from_day, dt.time())
    if to_day is not None:
        params["to_day"] = dt.datetime.combine(to_day, dt.time())
    if min_id is not None:
        params["min_id"] = int(min_id)
    sql = source_fingerprint_sql(
        conn, bounds, from_day is not None, to_day is not None, min_id is not None
    )
    statement = sa.text(sql)
    result: dict[dt.date, dict[int, DayFingerprint]] = {}
    for row in conn.execute(statement, params):
        day = _as_date(row[0])
        if day is None:
            continue
        per_bound = {}
        for i, bound in enumerate(bounds):
            values = [int(v or 0) for v in row[1 + 4 * i : 5 + 4 * i]]
            per_bound[bound] = DayFingerprint(*values)
        result[day] = per_bound
    return result


def source_max_id(conn: sa.Connection) -> int:
    """The source's highest ledger id (0 when empty): the `through_id` of a read starting now."""
    quote = conn.dialect.identifier_preparer.quote
    value = conn.execute(sa.text(f"SELECT MAX(id) FROM {quote('credit_histories')}")).scalar()
    return int(value or 0)


@dataclass(frozen=True)
class ClosedDaysPlan:
    """What the consistent cut reads for the closed days (`created_at` before `closed_before`).

    - `late_after_id`: rows above it may be missing from some closed day (written late): read
      them all, except the rows of days in `held_through` at or below their own bound;
    - `changed`: days whose rows at or below their `through_id` differ from what was read (a row
      rewritten, deleted, or committed late below the bound): read again, and news (a WARN);
    - `first_read`: days with rows but no fingerprint yet (history before the first partition, a
      warehouse from before fingerprints, a day that was empty): read whole, once.
    """

    late_after_id: int
    changed: tuple[dt.date, ...]
    first_read: tuple[dt.date, ...]
    held_through: tuple[tuple[dt.date, int], ...]

    @property
    def reread(self) -> tuple[dt.date, ...]:
        return tuple(sorted(set(self.changed) | set(self.first_read)))


def plan_closed_days(
    stored: Mapping[dt.date, StoredFingerprint],
    source: Mapping[dt.date, Mapping[int, DayFingerprint]],
    closed_before: dt.date,
    snapshot_max_id: int,
) -> ClosedDaysPlan:
    """Compare each closed day's stored fingerprint with the source's at the same bound.

    Why the lowest bound is the late-row mark: a closed day holds every row at or below its own
    `through_id`, so only rows above the lowest of them can be missing from some day. Days read
    more recently (a higher bound) are excluded from the late read up to their own bound, so the
    schedule's fresh partition is not read twice. With no fingerprints at all every closed day with
    rows is a first read, and nothing is late (`snapshot_max_id`).
    """
    closed_stored = {d: s for d, s in stored.items() if d < closed_before}
    computed = {b for per_bound in source.values() for b in per_bound}
    changed, first_read = [], []
    for day in sorted(set(closed_stored) | {d for d in source if d < closed_before}):
        mark = closed_stored.get(day)
        if mark is None or (computed and mark.through_id not in computed and day in source):
            first_read.append(day)  # no fingerprint, or one at a bound not computed this run
            continue
        now = source.get(day, {}).get(mark.through_id, EMPTY)
        if now != mark.fingerprint:
            changed.append(day)
    reread = set(changed) | set(first_read)
    bounds = [s.through_id for d, s in closed_stored.items() if d not in reread]
    late_after = min(bounds, default=snapshot_max_id)
    held = tuple(
        sorted(
            (d, s.through_id)
            for d, s in closed_stored.items()
            if d not in reread and s.through_id > late_after
        )
    )
    return ClosedDaysPlan(late_after, tuple(changed), tuple(first_read), held)


MAX_FINGERPRINT_BOUNDS = 6


def fingerprint_bounds(
    stored: Mapping[dt.date, StoredFingerprint], closed_before: dt.date, snapshot_max_id: int
) -> list[int]:
    """The bounds the cut's fingerprint query computes: the snapshot's, and the stored ones.

    Each bound adds four sums to the one scan. Normally there are two or three (the previous
    cut's, the partitions loaded since, the snapshot's); should many partitions have been loaded
    by separate runs without a cut in between, only the most common bounds are computed and the
    days at other bounds are simply read again once (`plan_closed_days`).
    """
    counts: dict[int, int] = {}
    for day, mark in stored.items():
        if day < closed_before:
            counts[mark.through_id] = counts.get(mark.through_id, 0) + 1
    common = sorted(counts, key=lambda b: (-counts[b], b))[: MAX_FINGERPRINT_BOUNDS - 1]
    return sorted({*common, snapshot_max_id})


def day_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as half-open [first, last + 1) ranges: few OR terms in the read's WHERE."""
    ranges: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] == day:
            ranges[-1][1] = day + dt.timedelta(days=1)
        else:
            ranges.append([day, day + dt.timedelta(days=1)])
    return [(a, b) for a, b in ranges]


def held_ranges(held_through: Iterable[tuple[dt.date, int]]) -> list[tuple[dt.date, dt.date, int]]:
    """Consecutive days with the same bound as (first, end, bound): rows the late read can skip."""
    out: list[list] = []
    for day, bound in sorted(held_through):
        if out and out[-1][1] == day and out[-1][2] == bound:
            out[-1][1] = day + dt.timedelta(days=1)
        else:
            out.append([day, day + dt.timedelta(days=1), bound])
    return [(a, b, c) for a, b, c in out]


def cut_where(plan: ClosedDaysPlan, closed_before: dt.datetime) -> tuple[str, dict[str, object]]:
    """The consistent cut's ledger WHERE clause and its bound parameters.

    Reads: rows without `created_at`; rows of the open day(s) and of the future (from
    `closed_before`); rows of closed days read again (`plan.reread`); and rows written late — every
    id above `plan.late_after_id`, except those of days read more recently at or below their bound.
    """
    params: dict[str, object] = {
        "closed_before": closed_before,
        "late_after_id": plan.late_after_id,
    }
    late = "id > :late_after_id"
    for i, (first, end, bound) in enumerate(held_ranges(plan.held_through)):
        late += (
            f" AND NOT (created_at >= :held_from_{i} AND created_at < :held_to_{i}"
            f" AND id <= :held_id_{i})"
        )
        params |= {
            f"held_from_{i}": dt.datetime.combine(first, dt.time()),
            f"held_to_{i}": dt.datetime.combine(end, dt.time()),
            f"held_id_{i}": bound,
        }
    terms = ["created_at IS NULL", "created_at >= :closed_before", f"({late})"]
    for i, (first, end) in enumerate(day_ranges(plan.reread)):
        terms.append(f"(created_at >= :reread_from_{i} AND created_at < :reread_to_{i})")
        params |= {
            f"reread_from_{i}": dt.datetime.combine(first, dt.time()),
            f"reread_to_{i}": dt.datetime.combine(end, dt.time()),
        }
    return " OR ".join(terms), params


# -- the recent check: an ordinary cut reads the source by primary key ---------------------------

MAX_OPEN_IDS_LISTED = 1000
"""Open-slice rows below the read's first id (NULL-dated ones) are read again by id, up to this
many; beyond it the cut reads the whole ledger once, as a full check does."""


def full_check_due(
    last_full_check: dt.datetime | None, cutoff: dt.datetime, every_days: int
) -> bool:
    """Whether this cut compares every closed day: none yet, `every_days` 0, or the last is old.

    Why a cadence and not every run: comparing every closed day scans the whole source ledger
    (no index on `created_at`), which is what made a daily run read 400 times the day's rows.
    """
    if last_full_check is None or every_days <= 0:
        return True
    return cutoff - last_full_check >= dt.timedelta(days=every_days)


@dataclass(frozen=True)
class RecentCheck:
    """What an ordinary (not full) cut compares and from which id it reads the source.

    - `recheck_from`: closed days from it on are compared whole, as a full check would;
    - `min_id`: the aggregate reads ids from it on — at most the first id the warehouse holds for
      those days, and at most one above the lowest stored bound (the late mark), so every row
      written late into any closed day is counted.
    """

    recheck_from: dt.date
    min_id: int


def recent_check(
    stored: Mapping[dt.date, StoredFingerprint],
    closed_before: dt.date,
    recheck_from: dt.date,
    recent_first_id: int | None,
    snapshot_max_id: int,
) -> RecentCheck:
    """The recent check's days and first id (`recent_first_id`: the warehouse's first of them)."""
    bounds = [s.through_id for d, s in stored.items() if d < closed_before]
    floor = min(bounds, default=snapshot_max_id) + 1
    first = floor if recent_first_id is None else min(recent_first_id, floor)
    return RecentCheck(recheck_from, first)


def closed_range_read_from(
    days: list[dt.date],
    stored: Mapping[dt.date, StoredFingerprint],
    recheck_from: dt.date,
    first_held: int | None,
    late_floor: int,
) -> int | None:
    """The first id a partition run re-reading already closed `days` needs (None: by dates).

    Why: a day the warehouse has read (it has a stored fingerprint) holds its rows at or below
    its bound from the first id it holds for it (`first_held`) on; the day's rows above its bound
    are late rows, with larger ids; a row committed after the previous cut with an id handed out
    just before it is at or above `late_floor`. So re-running recently closed days — the catch-up
    takes the newest closed day again — reads a primary-key range, as the recent check does.
    Only days the ordinary cut re-checks (from `recheck_from`) and that were read before: an older
    day (a backfill) or one never read is read by its dates, like a full check, since a row
    rewritten into it from another day may carry any id.
    """
    if not days or days[0] < recheck_from or any(day not in stored for day in days):
        return None
    firsts = [late_floor, min(stored[day].through_id for day in days) + 1]
    if first_held is not None:
        firsts.append(first_held)
    return min(firsts)


def synthesized_source_days(
    stored: Mapping[dt.date, StoredFingerprint],
    counted: Mapping[dt.date, Mapping[int, DayFingerprint]],
    check: RecentCheck,
    closed_before: dt.date,
    bounds: Iterable[int],
) -> dict[dt.date, dict[int, DayFingerprint]] | None:
    """The source's fingerprints as a full check would see them, from an aggregate over ids from
    `check.min_id` on (`counted`, at `bounds`), for days not re-checked assumed unchanged; None
    when it cannot tell.

    Why this is sound: a day before `recheck_from` is taken as it was read (its stored
    fingerprint at its bound `s`) plus the rows above `s` the source now has for it — which the
    aggregate counts in full, since `min_id` <= s + 1 — so at the snapshot's bound it holds its
    late rows. Days re-checked are compared whole (all their rows are at or above `min_id`).
    None (the caller runs a full check instead) when a day outside the re-checked ones has rows
    but was never read, or its bound was not computed: only a full read can settle those.
    """
    bounds = sorted(set(bounds))
    out: dict[dt.date, dict[int, DayFingerprint]] = {
        d: dict(per_bound)
        for d, per_bound in counted.items()
        if check.recheck_from <= d < closed_before
    }
    older = {d for d in [*counted, *stored] if d < min(check.recheck_from, closed_before)}
    for day in sorted(older):
        mark = stored.get(day)
        if mark is None or mark.through_id not in bounds:
            return None  # rows in a day never read, or at a bound not computed: read it whole
        now = counted.get(day, {})
        base = now.get(mark.through_id, EMPTY)
        out[day] = {
            bound: mark.fingerprint + (now.get(bound, EMPTY) - base)
            for bound in bounds
            if bound >= mark.through_id
        }
    return out


def recent_plan_is_complete(plan: ClosedDaysPlan, check: RecentCheck) -> bool:
    """A recent check's plan is usable only if every day it reads again is a re-checked day.

    A first read, or a changed day before `recheck_from`, needs the whole day, whose rows may lie
    below the primary-key range the recent read covers: the cut runs a full check instead.
    """
    return not plan.first_read and all(d >= check.recheck_from for d in plan.changed)


def days_that_lost_rows(
    plan: ClosedDaysPlan,
    stored: Mapping[dt.date, StoredFingerprint],
    source: Mapping[dt.date, Mapping[int, DayFingerprint]],
) -> tuple[dt.date, ...]:
    """Changed days that now hold fewer rows at their bound than were read.

    Why a recent check hands these to a full check: a deletion is the mark of a truncated or
    restored source, and only a full check puts the whole ledger before the shrink guard — a
    recent one would quietly shrink the re-checked days and leave the older ones as they were.
    """
    lost = []
    for day in plan.changed:
        mark = stored.get(day)
        if mark is not None:
            now = source.get(day, {}).get(mark.through_id, EMPTY)
            if now.rows < mark.fingerprint.rows:
                lost.append(day)
    return tuple(lost)


def id_range_where(from_id: int, listed_ids: list[int]) -> tuple[str, dict[str, object]]:
    """Every row with an id from `from_id` on, and the rows listed by id (a recent check's one
    read, `cut_scope.RecentRead`): primary-key ranges only."""
    params: dict[str, object] = {"wide_from_id": int(from_id)}
    return "id >= :wide_from_id" + _or_listed(params, "listed_id", listed_ids), params


def _or_listed(params: dict[str, object], name: str, ids: list[int]) -> str:
    """` OR id IN (:name_0, ...)` for `ids`, their values bound in `params` ('' for none)."""
    marks = []
    for i, value in enumerate(sorted(set(ids))):
        params[f"{name}_{i}"] = int(value)
        marks.append(f":{name}_{i}")
    return f" OR id IN ({', '.join(marks)})" if marks else ""


def bounded_cut_where(
    where: str, params: dict[str, object], read_from_id: int, open_ids: list[int]
) -> tuple[str, dict[str, object]]:
    """The cut's WHERE limited to ids from `read_from_id` on, plus the open rows listed by id.

    Why it reads the same rows as the unlimited WHERE: rows at or below the previous snapshot's
    highest id that are open (NULL, open-day or future `created_at`) were in the stored open
    slice — at or above `read_from_id`, or listed in `open_ids`; rows above the late mark and
    rows of re-checked days are at or above `read_from_id` by construction. Only a row rewritten
    in place could escape, and that is what the full check is for.
    """
    params = dict(params) | {"read_from_id": int(read_from_id)}
    clause = f"(id >= :read_from_id AND ({where}))" + _or_listed(params, "open_id", open_ids)
    return clause, params
