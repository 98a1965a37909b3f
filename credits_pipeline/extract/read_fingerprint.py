"""Fingerprints of the rows a read fetched, taken from its validated batches as they stream.

Why this module exists (issue 10, rows read by a daily run): a closed day's fingerprint
(`extract/fingerprint.py`) used to be asked of the source in an aggregate of its own before the
day's rows were read — the source read every row of the day twice, once to count and once to
send. The rows the read sends carry everything the fingerprint sums, so the pipeline sums them
itself, in a private in-memory DuckDB over each validated batch (whatever the warehouse's
engine), with the very expression the source's aggregate is tested against
(`SOURCE_ROW_FINGERPRINT`). The consistent cut does the same for the recent days it re-checks
(`extract/cut_scope.py`): one read by primary key instead of an aggregate and a read over the
same ids.

Where the batches cannot stand in for the source:
- a day with a quarantined row (`unknown_days`) keeps no fingerprint: the row's values did not
  survive validation, so its share of the day's sums is unknown. Asking the source afterwards
  would be wrong: a row committed in between below the bound would be counted but never read.
  The next cut finds the day never read and reads it whole in a full check, which stores the
  source's own numbers. When a quarantined row's day cannot be told (its `created_at` is the
  fault), `complete` is False and no day of the read keeps one;
- the source is SQLite (`FROM_READ_FAMILIES`): it stores timestamps as text, which its own
  `date()` and `strftime('%s')` and the warehouse's parser may read differently; SQLite serves
  the embedded demo, where the source's aggregate costs nothing worth saving.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import duckdb
import pandas as pd
import pyarrow as pa

from credits_pipeline.extract.fingerprint import SOURCE_ROW_FINGERPRINT
from credits_pipeline.ledger_fingerprint import DayFingerprint
from credits_pipeline.source.tables import CREDIT_HISTORIES
from credits_pipeline.validation.outcome import ValidatedBatch
from credits_pipeline.warehouse.raw_tables import column_types

FROM_READ_FAMILIES = frozenset({"mysql", "postgresql"})
"""Source dialect families whose typed timestamps make a read's batches as good as the source's
own aggregate (see the module's docstring for SQLite)."""

_BATCH = "fingerprinted_batch"


def _day_of(text: object) -> dt.date | None:
    """The UTC day of a quarantined row's `created_at` (kept as text), None if unreadable."""
    try:
        return dt.datetime.fromisoformat(str(text).strip()).date()
    except ValueError:
        return None


def fingerprints_from_read(family: str) -> bool:
    """Whether reads from a source of this dialect family fingerprint their own batches."""
    return family in FROM_READ_FAMILIES


class ReadFingerprints:
    """Per-day fingerprints, at each of `bounds`, of the clean rows of the batches it is given.

    `add` takes each validated batch of a read; `result()` gives what `source_day_fingerprints`
    would have returned over the same rows (days before `to_day` only, when it is set; days
    without rows absent). The sums are exact: each batch's aggregate is DuckDB's HUGEINT, summed
    here in Python integers.
    """

    def __init__(
        self,
        bounds: Iterable[int],
        to_day: dt.date | None = None,
        min_id: int | None = None,
    ) -> None:
        self.bounds = sorted({int(b) for b in bounds})
        self.to_day = to_day
        self.min_id = min_id
        self.complete = True
        self.unknown_days: set[dt.date] = set()
        self.rows_seen = 0
        self._sums: dict[dt.date, dict[int, list[int]]] = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        self._sql = self._aggregate_sql()

    def _aggregate_sql(self) -> str:
        sums = []
        for i in range(len(self.bounds)):
            within = f"id <= $b{i}"
            sums += [
                f"count(*) filter (where {within})",
                f"sum(id) filter (where {within})",
                f"sum(coalesce(user_id, -1)) filter (where {within})",
                f"sum({SOURCE_ROW_FINGERPRINT}) filter (where {within})",
            ]
        where = ["created_at is not null"]
        if self.to_day is not None:
            where.append("created_at < $to_day")
        if self.min_id is not None:
            where.append("id >= $min_id")
        # At the warehouse's types, as the stage holds them (a pandas batch has object columns).
        typed = ", ".join(f"cast({n} as {t}) as {n}" for n, t in column_types(CREDIT_HISTORIES))
        return (
            f"with typed as (select {typed} from {_BATCH}) "
            f"select cast(created_at as date) as day, {', '.join(sums)} "
            f"from typed where {' and '.join(where)} group by 1"
        )

    def add(self, batch: ValidatedBatch) -> None:
        """Sum the batch's clean rows; note the days of its quarantined rows (`unknown_days`)."""
        if len(batch.rejected):
            for text in batch.rejected["created_at"]:
                if text is None:
                    continue  # no day: the source's aggregate leaves it out too
                day = _day_of(text)
                if day is None:
                    self.complete = False
                else:
                    self.unknown_days.add(day)
        if not self.complete or not self.bounds:
            return
        clean = batch.clean
        rows = clean.num_rows if isinstance(clean, pa.Table) else len(clean)
        if not rows:
            return
        self.rows_seen += rows
        if self._con is None:
            # A few MB at most: one batch at a time, never spilled.
            self._con = duckdb.connect(config={"memory_limit": "256MB", "threads": 1})
        params: dict[str, object] = {f"b{i}": b for i, b in enumerate(self.bounds)}
        if self.to_day is not None:
            params["to_day"] = dt.datetime.combine(self.to_day, dt.time())
        if self.min_id is not None:
            params["min_id"] = int(self.min_id)
        self._con.register(_BATCH, clean if isinstance(clean, pa.Table) else pd.DataFrame(clean))
        try:
            for day, *values in self._con.execute(self._sql, params).fetchall():
                per_bound = self._sums.setdefault(day, {b: [0, 0, 0, 0] for b in self.bounds})
                for i, bound in enumerate(self.bounds):
                    acc = per_bound[bound]
                    for k in range(4):
                        acc[k] += int(values[4 * i + k] or 0)
        finally:
            self._con.unregister(_BATCH)

    def result(self) -> dict[dt.date, dict[int, DayFingerprint]]:
        """Per day and bound, the fingerprint of the rows added, days in `unknown_days` left out
        (only meaningful if `complete`)."""
        return {
            day: {b: DayFingerprint(*acc) for b, acc in per_bound.items()}
            for day, per_bound in sorted(self._sums.items())
            if day not in self.unknown_days
        }

    def unknown_between(self, start: dt.date, end: dt.date) -> set[dt.date]:
        """The days of [start, end) that keep no fingerprint: all of them when incomplete."""
        days = {start + dt.timedelta(days=i) for i in range((end - start).days)}
        return days if not self.complete else days & self.unknown_days

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
