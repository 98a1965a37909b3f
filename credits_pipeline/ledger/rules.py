"""The set-based ledger rules, as SQL over a handful of fixed input relations.

Ten of the 13 rules compare rows with catalogs, content tables or nearby rows of the same key; they
are joins and window functions, which a SQL engine evaluates over millions of rows far faster than
Python. They read only the relations named in `INPUT_RELATIONS` (temp views the caller creates), so
the same statements run over the warehouse in a Dagster asset and over a ten-row hand-built ledger
in a test. The SQL sticks to constructs DuckDB and BigQuery share where reasonable (CTEs, window
functions, `case`, `coalesce`); the few DuckDB spellings (`strftime`, `date_trunc`, `epoch_ms`,
`cast(... as varchar)`) are isolated in small helpers here. Every statement yields anomaly rows in
the shape of `marts.ledger_anomalies` (minus `detected_at`), plus a `credits` column: the credits a
violation involves, for the summaries.
"""

from __future__ import annotations

import datetime as dt

from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.replay import (
    EFFECT_ADD,
    EFFECT_CODES,
    EFFECT_PURCHASE,
    EFFECT_RESET,
    EFFECT_SKIP,
    EFFECT_SPEND,
    NULL_INT,
)
from credits_pipeline.source.catalog import (
    CATALOG,
    MONTHLY_RELEASE_EVENT,
    REFUND_EVENT,
)
from credits_pipeline.source.tables import EXTRACTED_ALIASES, UNEXTRACTED_ALIASES

# The input relations the rules read, with the columns they need. The caller makes them available
# (temp views or tables) on the connection before calling `reconcile`.
LEDGER_ROWS = "ledger_rows"
EVENTS = "events"
USERS = "users"
FACELESSES = "facelesses"
VIDEOS = "videos"
REAL_CLONES = "real_clones"
SPEECHES = "speeches"
INPUT_RELATIONS: dict[str, tuple[str, ...]] = {
    LEDGER_ROWS: (
        "id", "user_id", "credit_events_id", "creditable_type", "creditable_id",
        "calculative_index", "amount", "previous_amount", "event_type", "created_at", "updated_at",
    ),
    EVENTS: ("id", "name", "type", "calculation_type", "value", "min_amount"),
    USERS: ("id", "remaining_credit_amount", "extra_credits"),
    FACELESSES: ("id", "user_id", "video_id"),
    VIDEOS: ("id", "user_id", "type", "status"),
    REAL_CLONES: ("id", "user_id", "status"),
    SPEECHES: ("id", "user_id", "status"),
}

# Working relations (temp tables) the reconciliation creates on the connection.
CATALOG_TABLE = "_recon_catalog"
ALIASES_TABLE = "_recon_aliases"
ROWS_TABLE = "_recon_rows"
TS_PREVIOUS_TABLE = "_recon_ts_previous"

# Which content must be charged by which event (contract section 3, uncharged_content).
COMPLETED = "completed"
FACELESS_CHARGE = "faceless_video_generated"
REAL_CLONE_CHARGE = "real_clone_generated"
SPEECH_CHARGE = "text_to_speech_generated"
VIDEO_CHARGE = "video_generated"
CUSTOM_VIDEO_TYPE = "custom"
DOUBLE_CHARGE_WINDOW_S = 60

NULL_INT_VALUE = int(NULL_INT)

ANOMALY_COLUMNS = (
    "rule", "user_id", "credit_history_id", "entity_type", "entity_id", "expected", "actual",
    "detail", "credits",
)


def sql_params(cutoff_at: dt.datetime) -> dict[str, object]:
    """The bound parameters every rule statement may use: names and numbers, never spliced text.

    `cutoff_at` is the extraction cut-off as a naive UTC datetime (binds as TIMESTAMP).
    """
    return {
        "cutoff_at": cutoff_at,
        "null_int": NULL_INT_VALUE,
        "refund_event": REFUND_EVENT,
        "monthly_event": MONTHLY_RELEASE_EVENT,
        "faceless_charge": FACELESS_CHARGE,
        "real_clone_charge": REAL_CLONE_CHARGE,
        "speech_charge": SPEECH_CHARGE,
        "video_charge": VIDEO_CHARGE,
        "completed": COMPLETED,
        "custom_video": CUSTOM_VIDEO_TYPE,
        "window_s": DOUBLE_CHARGE_WINDOW_S,
        "faceless_alias": _alias_of("facelesses"),
        "real_clone_alias": _alias_of("real_clones"),
        "speech_alias": _alias_of("speeches"),
        "video_alias": _alias_of("videos"),
        "row_entity": rc.ENTITY_CREDIT_HISTORY,
    }


def _alias_of(table: str) -> str:
    return next(alias for alias, name in EXTRACTED_ALIASES.items() if name == table)


# --- small SQL helpers: the only dialect-specific spellings ------------------------------------


def _text(expr: str) -> str:
    """An integer (or integral double) as text without a decimal point; NULL stays NULL."""
    return (
        f"(case when {expr} is null then null "
        f"when cast({expr} as double) = floor(cast({expr} as double)) "
        f"and abs(cast({expr} as double)) < 9.0e18 "
        f"then cast(cast({expr} as bigint) as varchar) "
        f"else cast({expr} as varchar) end)"
    )


def _iso(expr: str) -> str:
    """A timestamp as ISO 8601 UTC text, e.g. 2025-01-31T23:59:59Z."""
    return f"strftime({expr}, '%Y-%m-%dT%H:%M:%SZ')"


def _show(expr: str) -> str:
    """Text for a detail sentence: like `_text`, but NULL reads 'NULL'."""
    return f"coalesce({_text(expr)}, 'NULL')"


def _show_str(expr: str) -> str:
    return f"coalesce('''' || {expr} || '''', 'NULL')"


def _seconds(expr: str) -> str:
    """Whole epoch seconds of a (second-truncated) timestamp."""
    return f"(epoch_ms({expr}) // 1000)"


# --- setup --------------------------------------------------------------------------------------


def setup_statements() -> list[tuple[str, list[tuple]]]:
    """Statements creating the small constant relations (catalog, aliases) with bound values."""
    return [
        (
            f"create or replace temp table {CATALOG_TABLE} "
            "(name varchar, effect varchar, effect_code tinyint, service varchar)",
            [],
        ),
        (
            f"insert into {CATALOG_TABLE} values (?, ?, ?, ?)",
            [(e.name, e.effect, EFFECT_CODES[e.effect], e.service) for e in CATALOG],
        ),
        (
            f"create or replace temp table {ALIASES_TABLE} (alias varchar, extracted boolean)",
            [],
        ),
        (
            f"insert into {ALIASES_TABLE} values (?, ?)",
            [(a, True) for a in sorted(EXTRACTED_ALIASES)]
            + [(a, False) for a in sorted(UNEXTRACTED_ALIASES)],
        ),
    ]


# The ledger as the rules see it: one row per ledger row, its event resolved by id, its effect from
# the catalog by event name (else by event_type), timestamps truncated to whole seconds, sorted by
# (user_id, id) so the replay can read it as it is stored.
ROWS_SQL = f"""
create or replace temp table {ROWS_TABLE} as
with resolved as (
    select
        r.id,
        r.user_id,
        r.credit_events_id,
        r.creditable_type,
        r.creditable_id,
        r.calculative_index,
        cast(r.amount as bigint) as amount,
        cast(r.previous_amount as bigint) as previous_amount,
        r.event_type,
        date_trunc('second', r.created_at) as created_at,
        date_trunc('second', r.updated_at) as updated_at,
        e.id is not null as event_known,
        e.name as event_name,
        case
            when c.effect_code is not null then c.effect_code
            when r.event_type = 1 then {EFFECT_ADD}
            when r.event_type = 2 then {EFFECT_SPEND}
            else {EFFECT_SKIP}
        end as effect_code
    from {LEDGER_ROWS} as r
    left join {EVENTS} as e on e.id = r.credit_events_id
    left join {CATALOG_TABLE} as c on c.name = e.name
)
select * from resolved
order by user_id, id
"""


# What the replay reads: ROWS_TABLE is stored in (user_id, id) order and DuckDB scans a table in
# insertion order, so no second sort (the replay verifies the order and sorts itself otherwise).
REPLAY_INPUT_SQL = f"""
select
    user_id,
    id,
    effect_code,
    coalesce(amount, 0) as amount,
    coalesce(previous_amount, $null_int) as previous_amount,
    coalesce({_seconds('created_at')}, $null_int) as created_s
from {ROWS_TABLE}
"""


# --- the row rules ------------------------------------------------------------------------------

EVENT_TYPE_MISMATCH_SQL = f"""
select
    '{rc.EVENT_TYPE_MISMATCH}' as rule,
    r.user_id,
    r.id as credit_history_id,
    $row_entity as entity_type,
    r.id as entity_id,
    {_text('e.type')} as expected,
    {_text('r.event_type')} as actual,
    'event ' || {_show_str('e.name')} || ' has type ' || {_show('e.type')}
        || ' but the row was written with event_type ' || {_show('r.event_type')} as detail,
    r.amount as credits
from {ROWS_TABLE} as r
join {EVENTS} as e on e.id = r.credit_events_id
where r.event_type is distinct from e.type
"""

PRICING_MISMATCH_SQL = f"""
with priced as (
    select
        r.id,
        r.user_id,
        r.amount,
        r.calculative_index,
        r.effect_code,
        e.name as event_name,
        e.calculation_type,
        e.min_amount,
        case
            when r.effect_code in ({EFFECT_RESET}, {EFFECT_PURCHASE})
                then cast(r.calculative_index as double)
            when e.calculation_type = 'fixed' then e.value
            when e.calculation_type = 'calculative' and r.effect_code = {EFFECT_SPEND}
                then ceil(e.value * (cast(r.calculative_index as double) / 2.0))
            when e.calculation_type = 'calculative' and r.effect_code = {EFFECT_ADD}
                then ceil(e.value * cast(r.calculative_index as double))
            else null
        end as price
    from {ROWS_TABLE} as r
    join {EVENTS} as e on e.id = r.credit_events_id
    where e.name is distinct from $refund_event
),
judged as (
    select
        *,
        price is not null and cast(amount as double) <> price as wrong_price,
        effect_code = {EFFECT_SPEND} and min_amount is not null
            and cast(amount as double) < min_amount as below_minimum
    from priced
)
select
    '{rc.PRICING_MISMATCH}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case when wrong_price then {_text('price')} else {_text('min_amount')} end as expected,
    {_text('amount')} as actual,
    case
        when wrong_price and below_minimum then
            'event ' || {_show_str('event_name')} || ' (' || calculation_type || ', index '
            || {_show('calculative_index')} || ') prices ' || {_show('price')}
            || ' and charges at least ' || {_show('min_amount')} || ', the row moved '
            || {_show('amount')}
        when wrong_price then
            'event ' || {_show_str('event_name')} || ' (' || calculation_type || ', index '
            || {_show('calculative_index')} || ') prices ' || {_show('price')}
            || ', the row moved ' || {_show('amount')}
        else
            'spend of ' || {_show('amount')} || ' is below the minimum '
            || {_show('min_amount')} || ' of event ' || {_show_str('event_name')}
    end as detail,
    case
        when wrong_price then cast(abs(cast(amount as double) - price) as bigint)
        else cast(ceil(min_amount - cast(amount as double)) as bigint)
    end as credits
from judged
where wrong_price or below_minimum
"""

# Spend and refund rows on a creditable, with the running sums excess_refund needs and the last
# refund before each row that double_charge needs. Both rules read this one window.
_CREDITED_CTES = f"""
credited as (
    select
        r.id,
        r.user_id,
        r.credit_events_id,
        r.creditable_type,
        r.creditable_id,
        r.amount,
        r.created_at,
        r.effect_code = {EFFECT_SPEND} as is_spend,
        coalesce(r.event_name = $refund_event, false) as is_refund
    from {ROWS_TABLE} as r
    where r.creditable_type is not null
        and r.creditable_id is not null
        and (r.effect_code = {EFFECT_SPEND} or r.event_name = $refund_event)
),
running as (
    select
        *,
        sum(case when is_spend then amount else 0 end) over per_creditable as charged,
        sum(case when is_refund then amount else 0 end) over per_creditable as refunded,
        max(case when is_refund then id end) over per_creditable as last_refund_id
    from credited
    window per_creditable as (
        partition by user_id, creditable_type, creditable_id
        order by id
        rows between unbounded preceding and current row
    )
)
"""

EXCESS_REFUND_SQL = f"""
with {_CREDITED_CTES},
refunds_over_charge as (
    select *
    from running
    where is_refund and refunded > charged
),
refunds_without_creditable as (
    select r.*
    from {ROWS_TABLE} as r
    where r.event_name = $refund_event
        and (r.creditable_type is null or r.creditable_id is null)
)
select
    '{rc.EXCESS_REFUND}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    {_text('charged')} as expected,
    {_text('refunded')} as actual,
    'refunds of ' || creditable_type || ' ' || {_show('creditable_id')} || ' reach '
        || {_show('refunded')} || ' credits, but only ' || {_show('charged')}
        || ' were charged for it before' as detail,
    least(refunded - charged, amount) as credits
from refunds_over_charge
union all
select
    '{rc.EXCESS_REFUND}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text('amount')} as actual,
    'refund of ' || {_show('amount')} || ' credits names no creditable ('
        || 'creditable_type ' || {_show_str('creditable_type')} || ', creditable_id '
        || {_show('creditable_id')} || ')' as detail,
    amount as credits
from refunds_without_creditable
"""

DOUBLE_CHARGE_SQL = f"""
with {_CREDITED_CTES},
timed_spends as (
    select
        id,
        user_id,
        credit_events_id,
        creditable_type,
        creditable_id,
        amount,
        created_at,
        {_seconds('created_at')} as created_s,
        last_refund_id
    from running
    where is_spend and created_at is not null
),
repeats as (
    select
        later.id,
        later.user_id,
        later.creditable_type,
        later.creditable_id,
        later.amount,
        later.created_at,
        max(earlier.id) as earlier_id
    from timed_spends as later
    join timed_spends as earlier
        on earlier.user_id = later.user_id
        and earlier.credit_events_id = later.credit_events_id
        and earlier.creditable_type = later.creditable_type
        and earlier.creditable_id = later.creditable_id
        and earlier.id < later.id
    where later.created_s - earlier.created_s >= 0
        and later.created_s - earlier.created_s < $window_s
        and (later.last_refund_id is null or later.last_refund_id < earlier.id)
    group by later.id, later.user_id, later.creditable_type, later.creditable_id,
        later.amount, later.created_at
)
select
    '{rc.DOUBLE_CHARGE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text('amount')} as actual,
    'charges ' || creditable_type || ' ' || {_show('creditable_id')} || ' again '
        || 'less than 60 s after row ' || {_show('earlier_id')}
        || ', with no refund in between' as detail,
    amount as credits
from repeats
"""

UNCHARGED_CONTENT_SQL = f"""
with charges as (
    select distinct creditable_type, creditable_id, event_name
    from {ROWS_TABLE}
    where creditable_id is not null
        and event_name in ($faceless_charge, $real_clone_charge, $speech_charge, $video_charge)
),
completed_content as (
    select f.user_id, $faceless_alias as alias, f.id, $faceless_charge as charge
    from {FACELESSES} as f
    join {VIDEOS} as v on v.id = f.video_id
    where v.status = $completed
    union all
    select user_id, $real_clone_alias, id, $real_clone_charge
    from {REAL_CLONES}
    where status = $completed
    union all
    select user_id, $speech_alias, id, $speech_charge
    from {SPEECHES}
    where status = $completed
    union all
    select user_id, $video_alias, id, $video_charge
    from {VIDEOS}
    where status = $completed and type = $custom_video
)
select
    '{rc.UNCHARGED_CONTENT}' as rule,
    c.user_id,
    cast(null as bigint) as credit_history_id,
    c.alias as entity_type,
    c.id as entity_id,
    null as expected,
    null as actual,
    'completed ' || c.alias || ' ' || {_show('c.id')} || ' has no ' || c.charge
        || ' row in the ledger' as detail,
    cast(0 as bigint) as credits
from completed_content as c
where not exists (
    select 1
    from charges as ch
    where ch.creditable_type = c.alias
        and ch.creditable_id = c.id
        and ch.event_name = c.charge
)
"""

ORPHAN_USER_SQL = f"""
select
    '{rc.ORPHAN_USER}' as rule,
    r.user_id,
    r.id as credit_history_id,
    $row_entity as entity_type,
    r.id as entity_id,
    null as expected,
    {_text('r.user_id')} as actual,
    'user ' || {_show('r.user_id')} || ' is not in users' as detail,
    r.amount as credits
from {ROWS_TABLE} as r
where not exists (select 1 from {USERS} as u where u.id = r.user_id)
"""

ORPHAN_EVENT_SQL = f"""
select
    '{rc.ORPHAN_EVENT}' as rule,
    r.user_id,
    r.id as credit_history_id,
    $row_entity as entity_type,
    r.id as entity_id,
    null as expected,
    {_text('r.credit_events_id')} as actual,
    'credit event ' || {_show('r.credit_events_id')} || ' is not in credit_events' as detail,
    r.amount as credits
from {ROWS_TABLE} as r
where not r.event_known
"""

ORPHAN_CREDITABLE_SQL = f"""
with content as (
    select $faceless_alias as alias, id, user_id from {FACELESSES}
    union all
    select $real_clone_alias, id, user_id from {REAL_CLONES}
    union all
    select $speech_alias, id, user_id from {SPEECHES}
    union all
    select $video_alias, id, user_id from {VIDEOS}
),
judged as (
    select r.id, r.user_id, r.creditable_type, r.creditable_id, r.amount, a.extracted
    from {ROWS_TABLE} as r
    left join {ALIASES_TABLE} as a on a.alias = r.creditable_type
    where r.creditable_type is not null
        and (a.extracted is null or a.extracted)
),
matched as (
    select
        j.*,
        c.id as content_id,
        c.user_id as owner_id,
        row_number() over (partition by j.id order by c.user_id) as nth
    from judged as j
    left join content as c
        on j.extracted and c.alias = j.creditable_type and c.id = j.creditable_id
),
broken as (
    select
        *,
        case
            when extracted is null then 'unknown_alias'
            when creditable_id is null then 'no_id'
            when content_id is null then 'missing'
            when owner_id is not null and owner_id <> user_id then 'other_user'
        end as reason
    from matched
    where nth = 1
)
select
    '{rc.ORPHAN_CREDITABLE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case when reason = 'other_user' then {_text('user_id')} end as expected,
    case
        when reason = 'unknown_alias' then creditable_type
        when reason = 'missing' then {_text('creditable_id')}
        when reason = 'other_user' then {_text('owner_id')}
    end as actual,
    case
        when reason = 'unknown_alias' then
            'creditable_type ' || {_show_str('creditable_type')} || ' is not a known alias'
        when reason = 'no_id' then
            'creditable_type ' || creditable_type || ' with a NULL creditable_id names no row'
        when reason = 'missing' then
            creditable_type || ' ' || {_show('creditable_id')} || ' does not exist'
        else
            creditable_type || ' ' || {_show('creditable_id')} || ' belongs to user '
            || {_show('owner_id')} || ', not to user ' || {_show('user_id')}
    end as detail,
    amount as credits
from broken
where reason is not null
"""

DUPLICATE_MONTHLY_RELEASE_SQL = f"""
with releases as (
    select
        id,
        user_id,
        amount,
        created_at,
        row_number() over (
            partition by user_id, date_trunc('month', created_at)
            order by id
        ) as nth
    from {ROWS_TABLE}
    where event_name = $monthly_event and created_at is not null
)
select
    '{rc.DUPLICATE_MONTHLY_RELEASE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    '1' as expected,
    {_text('nth')} as actual,
    'release number ' || {_show('nth')} || ' of monthly credits in '
        || strftime(created_at, '%Y-%m') || ' (UTC)' as detail,
    amount as credits
from releases
where nth > 1
"""

# The sequential half (created_at before the user's previous row) comes from the replay, in
# TS_PREVIOUS_TABLE(id, previous_created_at); one anomaly per row whatever the reasons.
TIMESTAMP_ORDER_SQL = f"""
with cutoff as (
    select date_trunc('second', cast($cutoff_at as timestamp)) as cutoff_at
),
flagged as (
    select
        r.id,
        r.user_id,
        r.amount,
        r.created_at,
        r.updated_at,
        p.previous_created_at,
        k.cutoff_at,
        case
            when r.created_at is null then 'null_created'
            when r.created_at > k.cutoff_at then 'after_cutoff'
            when p.previous_created_at is not null then 'before_previous'
            when r.updated_at < r.created_at then 'updated_before_created'
        end as reason
    from {ROWS_TABLE} as r
    cross join cutoff as k
    left join {TS_PREVIOUS_TABLE} as p on p.id = r.id
    where r.created_at is null
        or r.created_at > k.cutoff_at
        or p.id is not null
        or r.updated_at < r.created_at
)
select
    '{rc.TIMESTAMP_ORDER}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case reason
        when 'after_cutoff' then {_iso('cutoff_at')}
        when 'before_previous' then {_iso('previous_created_at')}
        when 'updated_before_created' then {_iso('created_at')}
    end as expected,
    case reason
        when 'updated_before_created' then {_iso('updated_at')}
        when 'null_created' then null
        else {_iso('created_at')}
    end as actual,
    case reason
        when 'null_created' then 'created_at is NULL'
        when 'after_cutoff' then 'created_at ' || {_iso('created_at')}
            || ' is after the extraction cut-off ' || {_iso('cutoff_at')}
        when 'before_previous' then 'created_at ' || {_iso('created_at')}
            || ' is before the user''s previous row (' || {_iso('previous_created_at')} || ')'
        else 'updated_at ' || {_iso('updated_at')} || ' is before created_at '
            || {_iso('created_at')}
    end as detail,
    amount as credits
from flagged
"""

# Statement per set-based rule, in the order of rules_catalog.RULES.
ROW_RULE_SQL: dict[str, str] = {
    rc.EVENT_TYPE_MISMATCH: EVENT_TYPE_MISMATCH_SQL,
    rc.PRICING_MISMATCH: PRICING_MISMATCH_SQL,
    rc.EXCESS_REFUND: EXCESS_REFUND_SQL,
    rc.DOUBLE_CHARGE: DOUBLE_CHARGE_SQL,
    rc.UNCHARGED_CONTENT: UNCHARGED_CONTENT_SQL,
    rc.ORPHAN_USER: ORPHAN_USER_SQL,
    rc.ORPHAN_EVENT: ORPHAN_EVENT_SQL,
    rc.ORPHAN_CREDITABLE: ORPHAN_CREDITABLE_SQL,
    rc.DUPLICATE_MONTHLY_RELEASE: DUPLICATE_MONTHLY_RELEASE_SQL,
    rc.TIMESTAMP_ORDER: TIMESTAMP_ORDER_SQL,
}


def used_params(sql: str, params: dict[str, object]) -> dict[str, object]:
    """The subset of `params` a statement names (DuckDB rejects unused named parameters)."""
    return {k: v for k, v in params.items() if f"${k}" in sql}
