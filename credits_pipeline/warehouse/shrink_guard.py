"""The shrink guard: a replacement that would leave a raw table far emptier than it was is refused.

Every swap into `raw` replaces a slice with what the source gave this run. When the source is empty
or truncated — a restore in progress, a wrong database, a table emptied by mistake — the swap would
faithfully copy that emptiness: `raw.users` and `raw.credit_histories` go to zero, the marts are
rebuilt from nothing, and thousands of spurious anomalies are ready to be alerted. Ledgers and user
tables do not shrink by half overnight, so a replacement that keeps fewer than a fraction of the
rows it replaces (`CREDITS_SHRINK_FRACTION`, default 0.5), or none at all, is far more likely a
broken source than news. The guard runs inside the swap's transaction, before anything is deleted:
the asset fails with one message naming the relation, both counts and the variable that lets it
through (`CREDITS_ALLOW_SHRINK=<table>[,<table>]|all`), the transaction rolls back, and everything
downstream is skipped — the warehouse stays exactly as it was.

The ledger is judged whole: the daily consistent cut re-reads every closed day whose fingerprint
changed, and a truncated source changes them all, so measuring only the open slice would let the
cut empty `raw.credit_histories` day by day. There the guard compares the whole ledger (closed days
and open slice) before the cut rewrites closed days with after, in the same transaction
(`raw_tables.guard_whole_ledger`).

`shrink_refusal` is the decision, pure and shared by the DuckDB and the BigQuery stagers;
`guard_replacement` reads the settings and raises.
"""

from __future__ import annotations

from credits_pipeline import settings
from credits_pipeline.source.reader import SourceError


class ShrinkRefused(SourceError):
    """A swap would shrink a raw table beyond the allowed fraction.

    A `SourceError` on purpose: the cause is what the source returned, and the extraction assets
    already turn a `SourceError` into one clear Dagster failure without a traceback.
    """


def shrink_refusal(
    relation: str,
    table_name: str,
    before: int,
    after: int,
    *,
    min_fraction: float,
    allowed: frozenset[str],
) -> str | None:
    """Why replacing `before` rows of `relation` by `after` rows is refused, or None if it is fine.

    Refused when the relation held rows and would keep none, or fewer than `min_fraction` of them;
    never when it was empty (a first load), and never when `table_name` (the contract table) or
    `all` is in `allowed`. The message is the one a data engineer reads: it names the relation,
    the counts, and the variable that allows the shrink.
    """
    if before <= 0 or after >= before:
        return None
    if after > 0 and after >= before * min_fraction:
        return None
    if table_name.lower() in allowed or settings.ALLOW_SHRINK_ALL in allowed:
        return None
    how = "would be emptied" if after == 0 else f"would keep only {after / before:.1%} of its rows"
    allow = settings.ALLOW_SHRINK_VAR
    return (
        f"{relation}: the source returned {after} row(s) where the warehouse holds {before}; "
        f"the table {how} (the guard refuses keeping fewer than {min_fraction:.0%}, "
        f"{settings.SHRINK_FRACTION_VAR}). Nothing was replaced: the warehouse keeps its "
        "previous rows and what depends on them is not rebuilt. Check the source; if the shrink "
        f"is real, re-run with {allow}={table_name} (or {allow}={settings.ALLOW_SHRINK_ALL})."
    )


def guard_replacement(relation: str, table_name: str, before: int, after: int) -> None:
    """Raise `ShrinkRefused` when the configured guard refuses this replacement."""
    reason = shrink_refusal(
        relation,
        table_name,
        int(before or 0),
        int(after or 0),
        min_fraction=settings.shrink_fraction(),
        allowed=settings.allowed_shrinks(),
    )
    if reason:
        raise ShrinkRefused(reason)
