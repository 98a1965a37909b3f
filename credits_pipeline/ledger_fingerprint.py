"""The fingerprint of a closed ledger day, as the extraction computes it and the warehouse keeps it.

`extract/fingerprint.py` computes fingerprints from the source and decides which days to read
again; `warehouse/raw_tables.py` stores them in `raw._ledger_fingerprints` and reads them back. The
values both exchange are defined here, in a module that imports nothing of either, so the warehouse
does not import the extraction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DayFingerprint:
    """What a day of the ledger holds, cheaply: equal fingerprints mean (almost surely) equal
    rows."""

    rows: int = 0
    id_sum: int = 0
    user_sum: int = 0
    digest: int = 0

    # Every term is a sum over rows, so the fingerprint of a union of rows is the sum of theirs:
    # a day as read plus the rows written late into it since (extract/fingerprint.py).
    def __add__(self, other: DayFingerprint) -> DayFingerprint:
        return DayFingerprint(
            self.rows + other.rows,
            self.id_sum + other.id_sum,
            self.user_sum + other.user_sum,
            self.digest + other.digest,
        )

    def __sub__(self, other: DayFingerprint) -> DayFingerprint:
        return DayFingerprint(
            self.rows - other.rows,
            self.id_sum - other.id_sum,
            self.user_sum - other.user_sum,
            self.digest - other.digest,
        )


EMPTY = DayFingerprint()


@dataclass(frozen=True)
class StoredFingerprint:
    """A closed day's fingerprint as the warehouse read it: over ids at or below `through_id`."""

    through_id: int
    fingerprint: DayFingerprint
