"""Second-precision UTC time helpers for the demo generator.

The simulation keeps every instant as integer epoch seconds (cheap to compare and to heap-sort over
millions of rows) and turns them into SQL literals only when a row is written. Calendar arithmetic
(billing anniversaries, calendar months of yearly releases) is done here once, in UTC.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time

DAY = 86_400
HOUR = 3_600
MINUTE = 60


def epoch(d: dt.date | dt.datetime) -> int:
    """Epoch seconds of a UTC date (its midnight) or naive/aware UTC datetime."""
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    return calendar.timegm(d.timetuple())


def add_months(t: int, months: int) -> int:
    """The same wall-clock instant `months` calendar months later, the day clamped to the month's
    end — how Stripe moves a billing anchor (Jan 31 -> Feb 28/29)."""
    g = time.gmtime(t)
    m0 = g.tm_mon - 1 + months
    year, month = g.tm_year + m0 // 12, m0 % 12 + 1
    day = min(g.tm_mday, calendar.monthrange(year, month)[1])
    return calendar.timegm((year, month, day, g.tm_hour, g.tm_min, g.tm_sec, 0, 0, 0))


def first_of_next_month(t: int) -> int:
    """Midnight UTC of the first day of the calendar month after the one containing `t`."""
    g = time.gmtime(t)
    year, month = (g.tm_year + 1, 1) if g.tm_mon == 12 else (g.tm_year, g.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


def month_key(t: int) -> str:
    """'YYYY-MM' of `t` in UTC: the calendar month of a yearly plan's release."""
    return time.strftime("%Y-%m", time.gmtime(t))


class TimestampFormatter:
    """Formats epoch seconds as the SQL literal a dialect stores for a naive UTC timestamp.

    SQLite has no timestamp type: it gets the text SQLAlchemy's `DateTime` writes and parses
    (`YYYY-MM-DD HH:MM:SS.000000`), so readers going through SQLAlchemy and plain string
    comparison agree. Servers get `YYYY-MM-DD HH:MM:SS` (MariaDB sessions run at `+00:00`).
    This is on the hot path of millions of rows, so it is two lookups and a concatenation: a
    cached 'YYYY-MM-DD HH:' per hour and a precomputed 'MM:SS' table.
    """

    def __init__(self, fractional: bool) -> None:
        suffix = ".000000" if fractional else ""
        self._minute_second = [f"{m:02d}:{s:02d}{suffix}" for m in range(60) for s in range(60)]
        self._hours: dict[int, str] = {}

    def __call__(self, t: int | None) -> str | None:
        if t is None:
            return None
        h, r = divmod(t, HOUR)
        prefix = self._hours.get(h)
        if prefix is None:
            prefix = time.strftime("%Y-%m-%d %H:", time.gmtime(h * HOUR))
            self._hours[h] = prefix
        return prefix + self._minute_second[r]
