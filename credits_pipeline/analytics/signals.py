"""The usage-risk signals as WARN asset checks that the alert sensor delivers like any other.

`marts.usage_risk_signals` (dbt) flags users; a flag nobody hears of protects nobody. One check per
signal family on that mart fails (WARN: a suspicion, not a broken pipeline) when it flags anyone,
with the metadata keys of `credits_pipeline.check_metadata` that the alert sensor reads from any
failing check — the signal as the rule, the flagged users as the violations, the credits they
involve, and the worst users (highest score first) as a Markdown table — so the alert channels
carry them with no code of their own. The summary is computed by a pure function over the mart's
flagged rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from credits_pipeline import check_metadata as cm
from credits_pipeline.names import marts_key

USAGE_RISK_SIGNALS_KEY = marts_key("usage_risk_signals")

SPEND_VELOCITY_SPIKE = "spend_velocity_spike"
REFUND_RATIO = "refund_ratio"
PURCHASE_THEN_DRAIN = "purchase_then_drain"
ADMIN_GRANT_OUT_OF_PATTERN = "admin_grant_out_of_pattern"
REPEATED_OVERDRAFT_WRITEOFFS = "repeated_overdraft_writeoffs"
SHARED_CONTENT_PATTERN = "shared_content_pattern"
SIGNALS: tuple[str, ...] = (
    SPEND_VELOCITY_SPIKE,
    REFUND_RATIO,
    PURCHASE_THEN_DRAIN,
    ADMIN_GRANT_OUT_OF_PATTERN,
    REPEATED_OVERDRAFT_WRITEOFFS,
    SHARED_CONTENT_PATTERN,
)
CHECK_PREFIX = "usage_risk_"
HIGH_SCORE = 2.0  # twice the threshold: counted apart, for whoever triages the alert first
WORST_ROWS = 10

# Keys of this check's own (the shared ones come from check_metadata).
HIGH_SCORE_KEY = "high_score_users"
MEASURED_AT_KEY = "measured_at"

FLAGGED_SQL = f"""
select signal, user_id, score, observed_value, baseline_value, credits_involved, evidence,
    ledger_row_ids, measured_at
from {USAGE_RISK_SIGNALS_KEY.path[0]}.{USAGE_RISK_SIGNALS_KEY.path[1]}
where flagged
order by signal, score desc, user_id
"""


def check_name(signal: str) -> str:
    return f"{CHECK_PREFIX}{signal}"


@dataclass(frozen=True)
class FlaggedRow:
    signal: str
    user_id: int
    score: float
    observed_value: float | None
    baseline_value: float | None
    credits_involved: int | None
    evidence: str | None
    ledger_row_ids: str | None
    measured_at: object = None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def worst_markdown(signal: str, rows: list[FlaggedRow]) -> str:
    if not rows:
        return f"No user flagged by `{signal}`."
    columns = (
        "user_id",
        "score",
        "observed_value",
        "baseline_value",
        "credits_involved",
        "ledger_row_ids",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:WORST_ROWS]:
        lines.append("| " + " | ".join(_cell(getattr(row, c)) for c in columns) + " |")
    return "\n".join(lines)


def signal_check_results(
    rows: list[FlaggedRow], asset_key: dg.AssetKey = USAGE_RISK_SIGNALS_KEY
) -> list[dg.AssetCheckResult]:
    """One WARN check result per signal: failed when the signal flags anyone."""
    results = []
    for signal in SIGNALS:
        flagged = sorted(
            (r for r in rows if r.signal == signal), key=lambda r: (-r.score, r.user_id)
        )
        credits = sum(int(r.credits_involved or 0) for r in flagged)
        high = sum(1 for r in flagged if r.score >= HIGH_SCORE)
        measured = next((r.measured_at for r in flagged if r.measured_at is not None), None)
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=check_name(signal),
                passed=not flagged,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"{len(flagged)} user(s) flagged by `{signal}` ({high} at twice the "
                    f"threshold or more), {credits} credits involved"
                    if flagged
                    else f"no user flagged by `{signal}`"
                ),
                metadata={
                    cm.RULE: dg.MetadataValue.text(signal),
                    cm.SEVERITY: dg.MetadataValue.text(dg.AssetCheckSeverity.WARN.value),
                    cm.VIOLATIONS: dg.MetadataValue.int(len(flagged)),
                    cm.CREDITS_AT_STAKE: dg.MetadataValue.int(credits),
                    HIGH_SCORE_KEY: dg.MetadataValue.int(high),
                    cm.WORST_USER_IDS: dg.MetadataValue.text(
                        ", ".join(str(r.user_id) for r in flagged[:WORST_ROWS])
                    ),
                    cm.WORST_USERS: dg.MetadataValue.md(worst_markdown(signal, flagged)),
                    MEASURED_AT_KEY: dg.MetadataValue.text(str(measured) if measured else ""),
                },
            )
        )
    return results


def read_flagged(con) -> list[FlaggedRow]:
    """The mart's flagged rows (DuckDB or the BigQuery connection, which translates the SQL)."""
    return [FlaggedRow(*row) for row in con.execute(FLAGGED_SQL).fetchall()]


check_specs = [
    dg.AssetCheckSpec(
        name=check_name(signal),
        asset=USAGE_RISK_SIGNALS_KEY,
        description=f"WARN when `{signal}` flags any user (docs/analytics.md).",
    )
    for signal in SIGNALS
]
