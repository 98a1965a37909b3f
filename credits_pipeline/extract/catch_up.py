"""Which ledger partitions a `materialize` on an existing warehouse must (re)load: a catch-up.

Re-extracting every daily partition on every run costs a day of work per day of history. Nothing
needs it: a loaded partition stays right until its source day changes, and a changed day is found
by its fingerprint (extract/fingerprint.py) — the consistent cut reads such days again anyway, but
re-loading them as partitions keeps `raw._ledger_partitions` true to its day. A catch-up therefore
loads only the partitions that are missing (new days since the last run, a failed run's days) or
whose fingerprint differs, as few contiguous ranges as possible: each range is one single-run
backfill. Pure functions; the CLI reads the inputs (partition keys, `loaded_ledger_partitions`)
and launches one run over `catch_up_window` (`credits-pipeline materialize`; `--full-refresh` takes
every day). Changed closed days need no partition run of their own: the consistent cut of the same
run reads them again by fingerprint (extract/fingerprint.py) and logs them for dbt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from credits_pipeline.extract.fingerprint import EMPTY, DayFingerprint, StoredFingerprint


def changed_days(
    stored: Mapping[dt.date, StoredFingerprint],
    source: Mapping[dt.date, Mapping[int, DayFingerprint]],
    days: Iterable[dt.date],
) -> set[dt.date]:
    """Days among `days` whose source fingerprint at the stored bound differs from the stored one.

    A day without a stored fingerprint is not "changed" here: it is either missing (no partition)
    or loaded by a version that kept none, and the consistent cut reads it once.
    """
    out = set()
    for day in days:
        mark = stored.get(day)
        if mark is not None and source.get(day, {}).get(mark.through_id, EMPTY) != mark.fingerprint:
            out.add(day)
    return out


def catch_up_ranges(
    partition_keys: Sequence[str],
    loaded: Iterable[dt.date],
    changed: Iterable[dt.date] = (),
    full_refresh: bool = False,
) -> list[tuple[str, str]]:
    """The partitions to materialize, as inclusive (first_key, last_key) ranges in key order.

    `partition_keys` are the definition's keys (`YYYY-MM-DD`, ascending); `loaded` the days the
    warehouse holds (`raw._ledger_partitions`); `changed` days whose fingerprint differs. With
    `full_refresh` every key is taken (one range). An empty list: nothing to extract by partition
    (the consistent cut, dbt and the reconciliation still run).
    """
    if not partition_keys:
        return []
    if full_refresh:
        return [(partition_keys[0], partition_keys[-1])]
    have = set(loaded)
    redo = set(changed)
    ranges: list[list[str]] = []
    previous_taken = False
    for key in partition_keys:
        day = dt.date.fromisoformat(key)
        take = day not in have or day in redo
        if take and previous_taken:
            ranges[-1][1] = key
        elif take:
            ranges.append([key, key])
        previous_taken = take
    return [(a, b) for a, b in ranges]


def catch_up_window(
    partition_keys: Sequence[str], loaded: Iterable[dt.date], full_refresh: bool = False
) -> tuple[str, str] | None:
    """The one partition range a `materialize` runs: from the first day to load to the last.

    Why one range: the daily job's ledger asset is backfilled in a single run, so the rest of the
    graph runs once. Days already loaded between two missing ones are read again (idempotent: a
    partition is replaced whole). With nothing missing the newest closed day is taken, as the
    schedule would: cheap, and it picks up that day's rows committed since. None: no closed day.
    """
    if not partition_keys:
        return None
    ranges = catch_up_ranges(partition_keys, loaded, full_refresh=full_refresh)
    if not ranges:
        return partition_keys[-1], partition_keys[-1]
    return ranges[0][0], ranges[-1][1]
