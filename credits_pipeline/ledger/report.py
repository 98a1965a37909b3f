"""What a reconciliation run shows a data engineer in the Dagster UI, beyond the per-rule checks.

The checks say *which* rules fail; the materialization must also say *who*, *how much* and *since
when*: every user who is not ok (the 50 with most credits at stake, and how many in all) with the
rule, the pool, what the ledger expects and what the application stores; previews sorted by credits
at stake; the column schema of both relations; and the weekly count of anomalies per rule over the
last 12 months, measured back from the extraction cut-off (never from now(), so a re-run on the
same data draws the same chart). Anomalies without a date (rules about a user or a content row, or
a ledger row whose `created_at` is NULL or after the cut-off) are counted apart, not piled on the
cut-off's week where they would look like a spike. The chart is an SVG drawn here by hand and
embedded as a `data:image/svg+xml` image in Markdown — the Dagster UI renders it — next to the same
numbers as Unicode sparklines, so it needs no plotting library and stays deterministic and cheap
(one grouped query over the anomalies, a few kilobytes of text).
Everything here reads the report relations on the run's session (`reconcile.REPORT_RELATIONS`)
with bounded queries — the top non-ok users, five preview rows, counts per day and rule — so
neither report crosses into Python whole, however many users there are.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa

from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.warehouse.interface import Session

TREND_BUCKET_DAYS = 7  # one bar (and one sparkline character) per week
TREND_WEEKS = 52  # the last 12 months before the cut-off
TREND_WINDOW_DAYS = TREND_BUCKET_DAYS * TREND_WEEKS
PREVIEW_ROWS = 5
NON_OK_LIMIT = 50  # users listed in the metadata; the total says how many there are
DETAIL_PREVIEW_CHARS = 60
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
SPARK_ZERO = "·"
UNDATED = "undated"

# The chart's geometry (pixels) and one fixed colour per rule, in rule order.
CHART_WIDTH = 760
CHART_HEIGHT = 240
CHART_LEFT = 36
CHART_RIGHT = 190  # room for the legend
UNDATED_GAP = 2  # bar widths between the last week and the undated bar
CHART_TOP = 24
CHART_BOTTOM = 28
RULE_COLOURS = (
    "#d62728",
    "#ff7f0e",
    "#8c564b",
    "#bcbd22",
    "#e377c2",
    "#9467bd",
    "#1f77b4",
    "#17becf",
    "#2ca02c",
    "#7f7f7f",
    "#aec7e8",
    "#98df8a",
    "#c5b0d5",
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
    "entity_type": (
        "'credit_history', 'user' (balance_drift) or the content alias (uncharged_content)"
    ),
    "entity_id": "id of the entity",
    "expected": "what the rule expected",
    "actual": "what the ledger holds",
    "detail": "a sentence for a human",
    "credits": "credits the violation involves",
    "detected_at": "the extraction cut-off the run measured from",
    "first_detected_at": "the cut-off of the first run that reported this violation (same rule and "
    "key), kept across runs",
}

# The day an anomaly counts on: its ledger row's created_at; NULL (undated) for rules about a user
# or a content row and for rows with NULL or post-cut-off created_at.
DAILY_COUNTS_SQL = """
with ledger as (
    select id, min(created_at) as created_at from {ledger} group by id
)
select
    case
        when l.created_at is null or l.created_at > $cutoff_at then null
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
order by a.credits desc nulls last, l.created_at desc nulls last, a.rule, a.user_id, a.entity_id
limit {limit}
"""


@dataclass(frozen=True)
class AnomalyTrend:
    """Weekly anomaly counts per rule over the window ending on the cut-off's day, and the rest.

    Week 0 is the oldest: it starts on `first_day`; the last week ends on `last_day` (the cut-off's
    day). `before_window` counts older anomalies; `undated` those without a usable date, per rule.
    """

    first_day: dt.date
    last_day: dt.date
    counts: dict[int, Counter] = field(default_factory=dict)
    before_window: int = 0
    undated: Counter = field(default_factory=Counter)

    @property
    def weeks(self) -> list[dt.date]:
        """The first day of each weekly bucket, oldest first."""
        n = ((self.last_day - self.first_day).days + 1) // TREND_BUCKET_DAYS
        return [self.first_day + dt.timedelta(days=TREND_BUCKET_DAYS * i) for i in range(n)]

    def week_of(self, day: dt.date) -> int:
        return (day - self.first_day).days // TREND_BUCKET_DAYS

    def total(self, week: int) -> int:
        return sum(self.counts.get(week, Counter()).values())

    def per_rule(self, code: str) -> list[int]:
        return [self.counts.get(i, Counter())[code] for i in range(len(self.weeks))]

    @property
    def rules_present(self) -> list[str]:
        return [
            code
            for code in rc.RULE_CODES
            if self.undated[code] or any(c[code] for c in self.counts.values())
        ]


def anomaly_trend(
    con: Session,
    anomalies: str,
    cutoff_at: dt.datetime,
    ledger_relation: str = sql.LEDGER_ROWS,
    weeks: int = TREND_WEEKS,
) -> AnomalyTrend:
    """Count the anomalies of relation `anomalies` per week and rule over `weeks` weeks ending on
    the cut-off's day."""
    last_day = cutoff_at.date()
    first_day = last_day - dt.timedelta(days=weeks * TREND_BUCKET_DAYS - 1)
    rows = con.execute(
        DAILY_COUNTS_SQL.format(ledger=ledger_relation, anomalies=anomalies),
        {"cutoff_at": cutoff_at},
    ).fetchall()
    trend = AnomalyTrend(first_day, last_day)
    before = 0
    for day, rule, n in rows:
        if day is None:
            trend.undated[rule] += int(n)
        elif day < first_day:
            before += int(n)
        else:
            trend.counts.setdefault(trend.week_of(day), Counter())[rule] += int(n)
    return dataclasses.replace(trend, before_window=before)


def sparkline(values: list[int]) -> str:
    """One character per value: `·` for zero, ▁..█ scaled to the largest value."""
    peak = max(values, default=0)
    if peak == 0:
        return SPARK_ZERO * len(values)
    top = len(SPARK_LEVELS) - 1
    return "".join(
        SPARK_ZERO if v == 0 else SPARK_LEVELS[min(top, (v * top + peak - 1) // peak)]
        for v in values
    )


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def trend_svg(trend: AnomalyTrend) -> str:
    """A stacked bar per week (one colour per rule), an "undated" bar apart, legend on the right."""
    weeks = trend.weeks
    slots = len(weeks) + UNDATED_GAP + 1
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    undated_total = sum(trend.undated.values())
    peak = max([trend.total(i) for i in range(len(weeks))] + [undated_total]) or 1
    bar_w = plot_w / slots
    base_y = CHART_TOP + plot_h
    paths: dict[str, list[str]] = {code: [] for code in rc.RULE_CODES}
    columns = [(i, trend.counts.get(i, Counter())) for i in range(len(weeks))]
    columns.append((slots - 1, trend.undated))
    for slot, counts in columns:
        stacked = 0
        for code in rc.RULE_CODES:
            n = counts[code]
            if not n:
                continue
            y_top = base_y - (stacked + n) * plot_h / peak
            height = n * plot_h / peak
            x = CHART_LEFT + slot * bar_w
            paths[code].append(
                f"M{_fmt(x)} {_fmt(y_top)}h{_fmt(bar_w * 0.8)}v{_fmt(height)}h-{_fmt(bar_w * 0.8)}z"
            )
            stacked += n
    text = 'font-family="sans-serif" font-size="11" fill="#333"'
    last_week_x = CHART_LEFT + len(weeks) * bar_w
    undated_x = CHART_LEFT + (slots - 1) * bar_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}">',
        f'<rect width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#fff"/>',
        f'<text x="{CHART_LEFT}" y="14" {text} font-weight="bold">Ledger anomalies per week and '
        f"rule, {trend.first_day} to {trend.last_day} (cut-off day), and undated</text>",
        f'<line x1="{CHART_LEFT}" y1="{base_y}" x2="{_fmt(last_week_x)}" y2="{base_y}" '
        'stroke="#999"/>',
        f'<line x1="{_fmt(undated_x)}" y1="{base_y}" x2="{_fmt(undated_x + bar_w)}" y2="{base_y}" '
        'stroke="#999"/>',
        f'<line x1="{CHART_LEFT}" y1="{CHART_TOP}" x2="{CHART_LEFT}" y2="{base_y}" stroke="#999"/>',
        f'<text x="{CHART_LEFT - 4}" y="{CHART_TOP + 4}" {text} text-anchor="end">{peak}</text>',
        f'<text x="{CHART_LEFT - 4}" y="{base_y}" {text} text-anchor="end">0</text>',
        f'<text x="{CHART_LEFT}" y="{base_y + 16}" {text} text-anchor="start">{weeks[0]}</text>',
        f'<text x="{_fmt(last_week_x)}" y="{base_y + 16}" {text} text-anchor="end">'
        f"{trend.last_day}</text>",
        f'<text x="{_fmt(undated_x + bar_w / 2)}" y="{base_y + 16}" {text} '
        f'text-anchor="middle">{UNDATED}</text>',
    ]
    for code in rc.RULE_CODES:
        if paths[code]:
            parts.append(f'<path fill="{COLOUR_BY_RULE[code]}" d="{"".join(paths[code])}"/>')
    legend_x = CHART_LEFT + plot_w + 16
    for j, code in enumerate(trend.rules_present):
        y = CHART_TOP + 4 + j * 15
        parts.append(
            f'<rect x="{legend_x}" y="{y}" width="10" height="10" fill="{COLOUR_BY_RULE[code]}"/>'
        )
        parts.append(f'<text x="{legend_x + 14}" y="{y + 9}" {text}>{code}</text>')
    if not trend.rules_present:
        parts.append(f'<text x="{legend_x}" y="{CHART_TOP + 12}" {text}>no anomaly</text>')
    parts.append("</svg>")
    return "".join(parts)


# The Dagster UI shows a Markdown entry inline only below 1,000 characters (longer ones sit behind
# "[Show Markdown]"): the inline chart is a compact SVG of weekly totals, the undated bar apart.
UI_INLINE_MARKDOWN_LIMIT = 1000
MINI_WIDTH, MINI_HEIGHT, MINI_BAR, MINI_GAP = 460, 64, 8, 16


def mini_trend_svg(trend: AnomalyTrend) -> str:
    """Weekly totals as one filled polyline (oldest left), then the undated count as a grey bar."""
    totals = [trend.total(i) for i in range(len(trend.weeks))]
    undated = sum(trend.undated.values())
    peak = max([*totals, undated]) or 1
    top, base = 4, MINI_HEIGHT - 4
    step = (MINI_WIDTH - MINI_BAR - MINI_GAP) / max(len(totals) - 1, 1)
    points = " ".join(
        f"{round(i * step)},{round(base - n * (base - top) / peak)}" for i, n in enumerate(totals)
    )
    right = round((len(totals) - 1) * step)
    bar_h = round(undated * (base - top) / peak)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{MINI_WIDTH}" height="{MINI_HEIGHT}">'
        f'<polygon fill="#d62728" points="0,{base} {points} {right},{base}"/>'
        f'<rect x="{MINI_WIDTH - MINI_BAR}" y="{base - bar_h}" width="{MINI_BAR}" '
        f'height="{bar_h}" fill="#7f7f7f"/></svg>'
    )


def mini_trend_markdown(trend: AnomalyTrend) -> str:
    """The chart the UI shows inline: weekly totals over 12 months, undated apart (grey bar)."""
    svg = base64.b64encode(mini_trend_svg(trend).encode()).decode()
    in_window = sum(trend.total(i) for i in range(len(trend.weeks)))
    return (
        f"{in_window:,} anomalies by week, {trend.first_day} → {trend.last_day}; grey: "
        f"{sum(trend.undated.values()):,} undated; {trend.before_window:,} older.\n\n"
        f"![anomalies per week](data:image/svg+xml;base64,{svg})"
    )


def trend_image(trend: AnomalyTrend) -> str:
    """The chart as a Markdown image (an inline `data:` URL: no file, no server)."""
    svg = base64.b64encode(trend_svg(trend).encode()).decode()
    return f"![anomalies per week and rule](data:image/svg+xml;base64,{svg})"


def trend_heading(trend: AnomalyTrend) -> str:
    in_window = sum(trend.total(i) for i in range(len(trend.weeks)))
    return (
        f"**Anomalies per week, last {len(trend.weeks)} weeks** ({trend.first_day} to "
        f"{trend.last_day}, the cut-off's day), by the week of the ledger row's `created_at`: "
        f"{in_window:,} in the window, {trend.before_window:,} older, "
        f"{sum(trend.undated.values()):,} undated (rules about a user or a content row, or a "
        "ledger row whose `created_at` is NULL or after the cut-off; shown apart)."
    )


def trend_markdown(trend: AnomalyTrend) -> str:
    """The chart as an inline image, and per rule: a weekly sparkline and the undated count."""
    lines = [
        trend_heading(trend),
        "",
        trend_image(trend),
        "",
        f"| rule | severity | in window | undated | weekly, {trend.first_day} → {trend.last_day} |",
        "|---|---|---:|---:|---|",
    ]
    for rule in rc.RULES:
        values = trend.per_rule(rule.code)
        lines.append(
            f"| `{rule.code}` | {rule.severity} | {sum(values):,} | {trend.undated[rule.code]:,} "
            f"| `{sparkline(values)}` |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class NonOkUser:
    """A user whose stored balance or ledger chain is wrong, and how many credits that involves.

    `credits` is the sum of the credits of the user's `chain_break` and `balance_drift` anomalies
    (the two rules that decide a user's status), the same numbers the two checks add up.
    """

    user_id: int
    status: str
    rule: str
    pool: str
    expected: str
    actual: str
    drift: int
    credits: int


def _pools(row: dict) -> tuple[str, str, str]:
    """Which pool differs, what the ledger says (expected) and what `users` stores (actual)."""
    subscription = row["recorded_subscription_balance"] != row["ledger_subscription_balance"]
    purchased = row["recorded_purchased_balance"] != row["ledger_purchased_balance"]
    if subscription and purchased:
        return (
            "both",
            f"{row['ledger_subscription_balance']} + {row['ledger_purchased_balance']}",
            f"{row['recorded_subscription_balance']} + {row['recorded_purchased_balance']}",
        )
    if purchased:
        return (
            "purchased",
            str(row["ledger_purchased_balance"]),
            str(row["recorded_purchased_balance"]),
        )
    return (
        "subscription" if subscription else "",
        str(row["ledger_subscription_balance"]),
        str(row["recorded_subscription_balance"]),
    )


# Prefix of the columns NON_OK_SQL adds to the reconciliation's own (the stored row, for previews).
EXTRA = "_non_ok_"

# The `limit` non-ok users with most credits at stake (then by user id), each with its stored row,
# the credits of its `chain_break` and `balance_drift` anomalies, its first break (the lowest ledger
# row), and how many non-ok users and credits there are in all. A bounded result however many
# users are off.
NON_OK_SQL = f"""
with status_anomalies as (
    select user_id, rule, credit_history_id, expected, actual, credits
    from {{anomalies}}
    where rule in ($chain_break, $balance_drift)
),
at_stake as (
    select user_id, cast(coalesce(sum(credits), 0) as bigint) as credits
    from status_anomalies
    group by user_id
),
breaks as (
    select
        user_id,
        credit_history_id,
        expected,
        actual,
        row_number() over (
            partition by user_id order by credit_history_id, expected, actual
        ) as nth
    from status_anomalies
    where rule = $chain_break
),
ranked as (
    select
        r.*,
        coalesce(s.credits, 0) as {EXTRA}credits,
        b.credit_history_id as {EXTRA}break_id,
        b.expected as {EXTRA}break_expected,
        b.actual as {EXTRA}break_actual,
        row_number() over (order by coalesce(s.credits, 0) desc, r.user_id) as {EXTRA}rank,
        count(*) over () as {EXTRA}users,
        cast(sum(coalesce(s.credits, 0)) over () as bigint) as {EXTRA}credits_total
    from {{reconciliation}} as r
    left join at_stake as s on s.user_id = r.user_id
    left join breaks as b on b.user_id = r.user_id and b.nth = 1
    where r.status <> $ok
)
select * from ranked
where {EXTRA}rank <= $limit
order by {EXTRA}rank
"""


@dataclass(frozen=True)
class NonOkUsers:
    """The non-ok users with most credits at stake (`top`, largest first), their rows as stored
    (`rows`, the reconciliation's `columns`), and how many users and credits there are in all."""

    total: int
    credits: int
    top: list[NonOkUser] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


def non_ok_users(
    con: Session, reconciliation: str, anomalies: str, limit: int = NON_OK_LIMIT
) -> NonOkUsers:
    """The `limit` users whose status is not ok, largest credits at stake first (then by user id),
    read from the two report relations; and how many there are in all.

    For a broken chain whose pools agree in the end, expected/actual are the first break's (what
    previous_amount should have been).
    """
    statement = NON_OK_SQL.format(reconciliation=reconciliation, anomalies=anomalies)
    found = con.execute(
        statement,
        {
            "chain_break": rc.CHAIN_BREAK,
            "balance_drift": rc.BALANCE_DRIFT,
            "ok": rc.STATUS_OK,
            "limit": limit,
        },
    ).fetch_arrow_table()
    columns = [c for c in found.column_names if not c.startswith(EXTRA)]
    if found.num_rows == 0:
        return NonOkUsers(0, 0, columns=columns)
    users = []
    rows = found.to_pylist()
    for row in rows:
        pool, expected, actual = _pools(row)
        broken = row["status"] == rc.STATUS_BROKEN_CHAIN
        rule = rc.CHAIN_BREAK if broken else rc.BALANCE_DRIFT
        if broken and not pool and row[f"{EXTRA}break_id"] is not None:
            pool = f"chain (row {row[f'{EXTRA}break_id']})"
            expected, actual = str(row[f"{EXTRA}break_expected"]), str(row[f"{EXTRA}break_actual"])
        elif broken and pool:
            rule = f"{rc.CHAIN_BREAK}, {rc.BALANCE_DRIFT}"
        users.append(
            NonOkUser(
                row["user_id"],
                row["status"],
                rule,
                pool or "-",
                expected,
                actual,
                int(row["drift"]),
                int(row[f"{EXTRA}credits"]),
            )
        )
    return NonOkUsers(
        total=int(rows[0][f"{EXTRA}users"]),
        credits=int(rows[0][f"{EXTRA}credits_total"]),
        top=users,
        rows=[{c: row[c] for c in columns} for row in rows],
        columns=columns,
    )


def non_ok_markdown(users: NonOkUsers, limit: int = NON_OK_LIMIT) -> str:
    """Who is off and by how much: the `limit` users with most credits at stake, as a table."""
    if not users.total:
        return "Every user is ok: stored balances match the ledger and every chain holds."
    shown = users.top[:limit]
    lines = [
        f"**{users.total:,} user(s) not ok**, {users.credits:,} credits at stake in all; "
        f"the {len(shown):,} with most credits at stake, largest first. `expected` is what the "
        "ledger replay ends with, `actual` what `users` stores (for a broken chain whose pools "
        "agree: the first break's previous_amount).",
        "",
        "| user_id | status | rule | pool | expected | actual | drift | credits at stake |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for u in shown:
        lines.append(
            f"| {u.user_id} | {u.status} | `{u.rule}` | {u.pool} | {u.expected} | {u.actual} "
            f"| {u.drift:,} | {u.credits:,} |"
        )
    return "\n".join(lines)


def table_schema(schema: pa.Schema, docs: Mapping[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type).upper(), description=docs.get(f.name))
            for f in schema
        ]
    )


def _markdown(con: Session, statement: str, params: dict[str, object]) -> str:
    frame = con.execute(statement, params).fetchdf()
    return "_no rows_" if frame.empty else frame.to_markdown(index=False)


def reconciliation_preview(users: NonOkUsers) -> str:
    """The users with most credits at stake first (the non-ok users' order), as stored rows."""
    rows = users.rows[:PREVIEW_ROWS]
    if not rows:
        return "Every user is ok."
    columns = users.columns
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |")
    body = "\n".join(lines)
    return f"Users with most credits at stake first:\n\n{body}"


def anomalies_preview(con: Session, anomalies: str, ledger_relation: str = sql.LEDGER_ROWS) -> str:
    """The anomalies of relation `anomalies` involving most credits first (then the newest ledger
    rows)."""
    body = _markdown(
        con,
        NEWEST_ANOMALIES_SQL.format(
            ledger=ledger_relation,
            anomalies=anomalies,
            detail_chars=DETAIL_PREVIEW_CHARS,
            limit=PREVIEW_ROWS,
        ),
        {},
    )
    return f"Anomalies with most credits at stake first:\n\n{body}"
