"""What a reconciliation run shows a data engineer in the Dagster UI, beyond the per-rule checks.

The checks say *which* rules fail; the materialization must also say *since when* and *how much*:
the column schema of both relations, a small preview, and the daily count of anomalies per rule over
the last 90 days, measured back from the extraction cut-off (never from now(), so a re-run on the
same data draws the same chart). The chart is an SVG drawn here by hand and embedded as a
`data:image/svg+xml` image in Markdown — the Dagster UI renders it — next to the same numbers as
weekly Unicode sparklines and a table of daily counts, so it needs no plotting library and stays
deterministic and cheap (one grouped query over the anomalies, a few kilobytes of text).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import dagster as dg
import duckdb
import pyarrow as pa

from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger import rules_catalog as rc

TREND_WINDOW_DAYS = 90
PREVIEW_ROWS = 5
DETAIL_PREVIEW_CHARS = 60
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
SPARK_ZERO = "·"
SPARK_BUCKET_DAYS = 7  # one sparkline character per week: 13 characters for 90 days

# The chart's geometry (pixels) and one fixed colour per rule, in rule order.
CHART_WIDTH = 760
CHART_HEIGHT = 240
CHART_LEFT = 36
CHART_RIGHT = 190  # room for the legend
CHART_TOP = 24
CHART_BOTTOM = 28
RULE_COLOURS = (
    "#d62728", "#ff7f0e", "#8c564b", "#bcbd22", "#e377c2", "#9467bd", "#1f77b4",
    "#17becf", "#2ca02c", "#7f7f7f", "#aec7e8", "#98df8a", "#c5b0d5",
)
COLOUR_BY_RULE = dict(zip(rc.RULE_CODES, RULE_COLOURS, strict=True))

RECONCILIATION_COLUMN_DOCS = {
    "user_id": "users.id; one row per user in users",
    "ledger_subscription_balance": "subscription pool after the user's last ledger row (replay)",
    "recorded_subscription_balance": "users.remaining_credit_amount as stored (NULL read as 0)",
    "ledger_purchased_balance": "purchased pool after the user's last ledger row (replay)",
    "recorded_purchased_balance": "users.extra_credits as stored",
    "drift": "recorded minus ledger, both pools summed",
    "chain_breaks": "rows whose previous_amount differs from what the replay expects",
    "first_break_history_id": "credit_histories.id of the first chain break (NULL when none)",
    "forfeited_credits": "breakage: subscription credits dropped by monthly resets",
    "written_off_credits": "credits spent that were not there (overdrafts)",
    "status": "'broken_chain' when chain_breaks > 0, else 'drift' when a pool differs, else 'ok'",
}
ANOMALY_COLUMN_DOCS = {
    "rule": "a rule code of contract section 3",
    "user_id": "the user the violation belongs to",
    "credit_history_id": "the ledger row (NULL for rules about a user or a content row)",
    "entity_type": "'credit_history', 'user' (balance_drift) or the content alias (uncharged_content)",
    "entity_id": "id of the entity",
    "expected": "what the rule expected",
    "actual": "what the ledger holds",
    "detail": "a sentence for a human",
    "credits": "credits the violation involves",
    "detected_at": "the extraction cut-off the run measured from",
}

# The day an anomaly counts on: its ledger row's created_at, or the detection day (the cut-off) for
# rules about a user or a content row and for rows with NULL or post-cut-off created_at.
DAILY_COUNTS_SQL = """
with ledger as (
    select id, min(created_at) as created_at from {ledger} group by id
)
select
    case
        when l.created_at is null or l.created_at > $cutoff_at then cast($cutoff_at as date)
        else cast(l.created_at as date)
    end as day,
    a.rule,
    count(*) as anomalies
from {anomalies} as a
left join ledger as l on l.id = a.credit_history_id
group by all
"""

NEWEST_ANOMALIES_SQL = """
with ledger as (
    select id, min(created_at) as created_at from {ledger} group by id
)
select
    a.rule, a.user_id, a.credit_history_id, a.entity_type, a.entity_id, a.expected, a.actual,
    a.credits, l.created_at as row_created_at, left(a.detail, {detail_chars}) as detail
from {anomalies} as a
left join ledger as l on l.id = a.credit_history_id
order by l.created_at desc nulls last, a.credit_history_id desc nulls last, a.rule, a.entity_id
limit {limit}
"""

# Users needing attention first (broken, then drifting), newest users first within each status.
RECONCILIATION_PREVIEW_SQL = """
select * from {reconciliation}
order by case status when $broken then 0 when $drifted then 1 else 2 end, user_id desc
limit {limit}
"""


@dataclass(frozen=True)
class AnomalyTrend:
    """Daily anomaly counts per rule over the window ending on the cut-off's day."""

    first_day: dt.date
    last_day: dt.date
    counts: dict[dt.date, Counter] = field(default_factory=dict)
    before_window: int = 0

    @property
    def days(self) -> list[dt.date]:
        return [self.first_day + dt.timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]

    def total(self, day: dt.date) -> int:
        return sum(self.counts.get(day, Counter()).values())

    def per_rule(self, code: str) -> list[int]:
        return [self.counts.get(day, Counter())[code] for day in self.days]

    @property
    def rules_present(self) -> list[str]:
        return [code for code in rc.RULE_CODES if any(c[code] for c in self.counts.values())]


def anomaly_trend(
    con: duckdb.DuckDBPyConnection,
    anomalies: pa.Table,
    cutoff_at: dt.datetime,
    ledger_relation: str = sql.LEDGER_ROWS,
    window_days: int = TREND_WINDOW_DAYS,
) -> AnomalyTrend:
    """Count anomalies per day and rule over `window_days` days ending on the cut-off's day."""
    last_day = cutoff_at.date()
    first_day = last_day - dt.timedelta(days=window_days - 1)
    con.register("_recon_trend_anomalies", anomalies)
    try:
        rows = con.execute(
            DAILY_COUNTS_SQL.format(ledger=ledger_relation, anomalies="_recon_trend_anomalies"),
            {"cutoff_at": cutoff_at},
        ).fetchall()
    finally:
        con.unregister("_recon_trend_anomalies")
    counts: dict[dt.date, Counter] = {}
    before = 0
    for day, rule, n in rows:
        if day < first_day:
            before += int(n)
        else:
            counts.setdefault(day, Counter())[rule] += int(n)
    return AnomalyTrend(first_day, last_day, counts, before)


def sparkline(values: list[int]) -> str:
    """One character per value: `·` for zero, ▁..█ scaled to the largest value."""
    peak = max(values, default=0)
    if peak == 0:
        return SPARK_ZERO * len(values)
    top = len(SPARK_LEVELS) - 1
    return "".join(SPARK_ZERO if v == 0 else SPARK_LEVELS[min(top, (v * top + peak - 1) // peak)] for v in values)


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def trend_svg(trend: AnomalyTrend) -> str:
    """A stacked bar per day (one colour per rule), y axis in anomalies, legend on the right."""
    days = trend.days
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    peak = max((trend.total(d) for d in days), default=0) or 1
    bar_w = plot_w / len(days)
    base_y = CHART_TOP + plot_h
    paths: dict[str, list[str]] = {code: [] for code in rc.RULE_CODES}
    for i, day in enumerate(days):
        stacked = 0
        for code in rc.RULE_CODES:
            n = trend.counts.get(day, Counter())[code]
            if not n:
                continue
            y_top = base_y - (stacked + n) * plot_h / peak
            height = n * plot_h / peak
            x = CHART_LEFT + i * bar_w
            paths[code].append(f"M{_fmt(x)} {_fmt(y_top)}h{_fmt(bar_w * 0.8)}v{_fmt(height)}h-{_fmt(bar_w * 0.8)}z")
            stacked += n
    text = 'font-family="sans-serif" font-size="11" fill="#333"'
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}">',
        f'<rect width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#fff"/>',
        f'<text x="{CHART_LEFT}" y="14" {text} font-weight="bold">Ledger anomalies per day and rule, '
        f"{trend.first_day} to {trend.last_day} (cut-off day)</text>",
        f'<line x1="{CHART_LEFT}" y1="{base_y}" x2="{CHART_LEFT + plot_w}" y2="{base_y}" stroke="#999"/>',
        f'<line x1="{CHART_LEFT}" y1="{CHART_TOP}" x2="{CHART_LEFT}" y2="{base_y}" stroke="#999"/>',
        f'<text x="{CHART_LEFT - 4}" y="{CHART_TOP + 4}" {text} text-anchor="end">{peak}</text>',
        f'<text x="{CHART_LEFT - 4}" y="{base_y}" {text} text-anchor="end">0</text>',
    ]
    for i, anchor in ((0, "start"), (len(days) // 2, "middle"), (len(days) - 1, "end")):
        x = CHART_LEFT + (i + (0.8 if anchor == "end" else 0)) * bar_w
        parts.append(f'<text x="{_fmt(x)}" y="{base_y + 16}" {text} text-anchor="{anchor}">{days[i]}</text>')
    for code in rc.RULE_CODES:
        if paths[code]:
            parts.append(f'<path fill="{COLOUR_BY_RULE[code]}" d="{"".join(paths[code])}"/>')
    legend_x = CHART_LEFT + plot_w + 16
    for j, code in enumerate(trend.rules_present):
        y = CHART_TOP + 4 + j * 15
        parts.append(f'<rect x="{legend_x}" y="{y}" width="10" height="10" fill="{COLOUR_BY_RULE[code]}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{y + 9}" {text}>{code}</text>')
    if not trend.rules_present:
        parts.append(f'<text x="{legend_x}" y="{CHART_TOP + 12}" {text}>no anomaly</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend_markdown(trend: AnomalyTrend) -> str:
    """The chart as an inline image, a sparkline per rule, and the days that had anomalies."""
    svg = base64.b64encode(trend_svg(trend).encode()).decode()
    days = trend.days
    in_window = sum(trend.total(d) for d in days)
    lines = [
        f"**Anomalies per day, last {len(days)} days** ({trend.first_day} to {trend.last_day}, the "
        f"cut-off's day), by the day of the ledger row's `created_at`; anomalies without a ledger "
        f"row or a usable `created_at` count on the cut-off day. {in_window:,} in the window, "
        f"{trend.before_window:,} older.",
        "",
        f"![anomalies per day and rule](data:image/svg+xml;base64,{svg})",
        "",
        f"| rule | severity | in window | weekly, {trend.first_day} → {trend.last_day} |",
        "|---|---|---:|---|",
    ]
    for rule in rc.RULES:
        values = trend.per_rule(rule.code)
        weekly = [sum(values[i : i + SPARK_BUCKET_DAYS]) for i in range(0, len(values), SPARK_BUCKET_DAYS)]
        lines.append(f"| `{rule.code}` | {rule.severity} | {sum(values):,} | `{sparkline(weekly)}` |")
    lines += ["", "| day | anomalies | by rule |", "|---|---:|---|"]
    active = [d for d in reversed(days) if trend.total(d)]
    for day in active:
        by_rule = trend.counts[day]
        detail = ", ".join(f"{code} {by_rule[code]}" for code in rc.RULE_CODES if by_rule[code])
        lines.append(f"| {day} | {trend.total(day):,} | {detail} |")
    if not active:
        lines.append("| — | 0 | no anomaly in the window |")
    return "\n".join(lines)


def table_schema(table: pa.Table, docs: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type).upper(), description=docs.get(f.name))
            for f in table.schema
        ]
    )


def _markdown(con: duckdb.DuckDBPyConnection, statement: str, params: dict[str, object]) -> str:
    frame = con.execute(statement, params).fetchdf()
    return "_no rows_" if frame.empty else frame.to_markdown(index=False)


def reconciliation_preview(con: duckdb.DuckDBPyConnection, result_table: pa.Table) -> str:
    """The users needing attention first (broken chain, drift), newest users first."""
    con.register("_recon_preview", result_table)
    try:
        body = _markdown(
            con,
            RECONCILIATION_PREVIEW_SQL.format(reconciliation="_recon_preview", limit=PREVIEW_ROWS),
            {"broken": rc.STATUS_BROKEN_CHAIN, "drifted": rc.STATUS_DRIFT},
        )
    finally:
        con.unregister("_recon_preview")
    return f"Users needing attention first, newest users first:\n\n{body}"


def anomalies_preview(
    con: duckdb.DuckDBPyConnection, anomalies: pa.Table, ledger_relation: str = sql.LEDGER_ROWS
) -> str:
    """The newest anomalies, by the `created_at` of their ledger row."""
    con.register("_recon_preview", anomalies)
    try:
        body = _markdown(
            con,
            NEWEST_ANOMALIES_SQL.format(
                ledger=ledger_relation,
                anomalies="_recon_preview",
                detail_chars=DETAIL_PREVIEW_CHARS,
                limit=PREVIEW_ROWS,
            ),
            {},
        )
    finally:
        con.unregister("_recon_preview")
    return f"Newest anomalies, by the ledger row's `created_at`:\n\n{body}"
