"""The 13 ledger rules, each one named SQL statement over a handful of fixed input relations.

All 13 live here, one statement per rule (`ROW_RULE_SQL`, `REPLAY_RULE_SQL`). Ten compare rows
with catalogs, content tables or nearby rows of the same key; three (`chain_break`,
`overdraft_writeoff`, `balance_drift`) read what the sequential replay (`replay.py`) flagged and
the pools it ended with, which `reconcile.py` puts in two working tables first. The ten are
joins and window functions, which a SQL engine evaluates over millions of rows far faster than
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
from credits_pipeline.names import rejected_name
from credits_pipeline.source.catalog import (
    CATALOG,
    MONTHLY_RELEASE_EVENT,
    REFUND_EVENT,
)
from credits_pipeline.source.tables import EXTRACTED_ALIASES, UNEXTRACTED_ALIASES
from credits_pipeline.source.tables import USERS as USERS_TABLE

assert {"keyword", "generator", "media", "character"} == UNEXTRACTED_ALIASES, (
    "rules.sql_params binds one parameter per unextracted alias: update it with the contract"
)

# The input relations the rules read, with the columns they need. The caller makes them available
# (temp views or tables) on the connection before calling `reconcile`.
LEDGER_ROWS = "ledger_rows"
EVENTS = "events"
USERS = "users"
FACELESSES = "facelesses"
VIDEOS = "videos"
REAL_CLONES = "real_clones"
SPEECHES = "speeches"
# Users the extraction quarantined (`raw.users__rejected`): in the source, but not in `users`.
# Their ledger rows are still `orphan_user` (the contract's code for "not in users"), but the
# detail says why, so nobody hunts the application for a user that exists.
QUARANTINED_USERS = "quarantined_users"
USERS_QUARANTINE_RELATION = f"raw.{rejected_name(USERS_TABLE.name)}"
INPUT_RELATIONS: dict[str, tuple[str, ...]] = {
    LEDGER_ROWS: (
        "id",
        "user_id",
        "credit_events_id",
        "creditable_type",
        "creditable_id",
        "calculative_index",
        "amount",
        "previous_amount",
        "event_type",
        "created_at",
        "updated_at",
    ),
    EVENTS: ("id", "name", "type", "calculation_type", "value", "min_amount"),
    USERS: ("id", "remaining_credit_amount", "extra_credits"),
    FACELESSES: ("id", "user_id", "video_id"),
    VIDEOS: ("id", "user_id", "type", "status"),
    REAL_CLONES: ("id", "user_id", "status"),
    SPEECHES: ("id", "user_id", "status"),
    QUARANTINED_USERS: ("id", "reason"),
}

# Working relations (temp tables) the reconciliation creates on the connection.
CATALOG_TABLE = "_recon_catalog"
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
    "rule",
    "user_id",
    "credit_history_id",
    "entity_type",
    "entity_id",
    "expected",
    "actual",
    "detail",
    "credits",
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
        "keyword_alias": "keyword",
        "generator_alias": "generator",
        "media_alias": "media",
        "character_alias": "character",
        "users_quarantine": USERS_QUARANTINE_RELATION,
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
    """Statements creating the small constant relation (the catalog) with bound values."""
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
    ]


# Each credit_events row resolved once against the catalog: its effect code (EFFECT_SKIP when its
# name is not listed; rows then follow their event_type). Tiny; every ledger row joins it once.
EVENTS_TABLE = "_recon_events"
EVENTS_SQL = f"""
create or replace temp table {EVENTS_TABLE} as
select
    e.id,
    e.name,
    e.type,
    e.calculation_type,
    e.value,
    e.min_amount,
    c.effect_code,
    c.service
from {EVENTS} as e
left join {CATALOG_TABLE} as c on c.name = e.name
where e.id is not null
"""

# The ledger as the rules see it: each row with its event resolved by id and its effect from the
# catalog by event name (else by event_type). A view, not a table: a 5M-row copy costs more than
# the scans that read it, and each rule reads few columns. Timestamps stay as stored; rules
# truncate to whole seconds only where a comparison needs it.
ROWS_SQL = f"""
create or replace temp view {ROWS_TABLE} as
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
    r.created_at,
    r.updated_at,
    e.id is not null as event_known,
    e.name as event_name,
    e.type as declared_type,
    e.calculation_type,
    e.value as event_value,
    e.min_amount,
    case
        when e.effect_code is not null then e.effect_code
        when r.event_type = 1 then {EFFECT_ADD}
        when r.event_type = 2 then {EFFECT_SPEND}
        else {EFFECT_SKIP}
    end as effect_code
from {LEDGER_ROWS} as r
left join {EVENTS_TABLE} as e on e.id = r.credit_events_id
"""


# The rows the per-user rules read (`rule_scope.py`): every row on a full run, on a resumed one
# only the rows of the users whose rules must be evaluated again (`RULE_SCOPE_TABLE`); the stored
# anomalies of every other user stand. A view over `ROWS_TABLE`, like it.
SCOPED_ROWS_TABLE = "_recon_scoped_rows"
RULE_SCOPE_TABLE = "_recon_rule_scope"


def scoped_rows_sql(scoped: bool) -> str:
    """The view `SCOPED_ROWS_TABLE`: all rows, or (`scoped`) those of the users in scope."""
    statement = f"create or replace temp view {SCOPED_ROWS_TABLE} as select * from {ROWS_TABLE}"
    if not scoped:
        return statement
    # a view takes no bound parameter: NULL_INT spelled as a literal (-2^63 is no BIGINT literal)
    null_int = f"({NULL_INT_VALUE + 1} - 1)"
    return (
        f"{statement} where coalesce(user_id, {null_int}) in "
        f"(select user_id from {RULE_SCOPE_TABLE})"
    )


# Every content row a ledger row may name, by (alias, id), with its owner (the smallest user_id
# when ids repeat): what `orphan_creditable` compares a row with. A table: the rules read it, and
# a resumed run compares it with the previous run's copy (`rule_scope.py`).
CONTENT_KEYS_TABLE = "_recon_content_keys"
CONTENT_KEYS_SQL = f"""
create or replace temp table {CONTENT_KEYS_TABLE} as
select $faceless_alias as alias, id, min(user_id) as owner_id from {FACELESSES} group by id
union all
select $real_clone_alias, id, min(user_id) from {REAL_CLONES} group by id
union all
select $speech_alias, id, min(user_id) from {SPEECHES} group by id
union all
select $video_alias, id, min(user_id) from {VIDEOS} group by id
"""


# What the replay reads: the few columns it needs, sorted by (user_id, id) by DuckDB (a parallel,
# cache-friendly sort: cheaper than sorting in Python and then walking rows in random order).
# Effects are resolved on the arrays afterwards (replay.resolve_effects), not by a join here.
def replay_input_sql(row_filter: str = "") -> str:
    """The replay's input in (user_id, id) order; `row_filter` (a where clause) narrows a resumed
    one.

    A NULL user_id sorts first as NULL_INT, exactly where the replay's arrays put it.
    """
    return f"""
select
    coalesce(user_id, $null_int) as user_id,
    id,
    coalesce(credit_events_id, $null_int) as credit_events_id,
    coalesce(event_type, $null_int) as event_type,
    coalesce(cast(amount as bigint), 0) as amount,
    coalesce(cast(previous_amount as bigint), $null_int) as previous_amount,
    coalesce(epoch_ms(created_at) // 1000, $null_int) as created_s
from {LEDGER_ROWS}
{row_filter}
order by coalesce(user_id, $null_int), id
"""


REPLAY_INPUT_SQL = replay_input_sql()

# Each credit_events row with its catalog effect code (EFFECT_SKIP when its name is not listed),
# and its name and service for the replay state's digest of the catalog (`events_digest`).
EVENT_EFFECTS_SQL = f"""
select id, coalesce(effect_code, {EFFECT_SKIP}) as effect_code, name, service
from {EVENTS_TABLE}
"""

# One scan for the six rules that look at a row on its own: the rows that break at least one,
# with what each rule needs to explain itself. Problems are small integer codes (cheaper than text
# over millions of rows); the formatting statements below turn them into sentences.
ROW_CHECKS_TABLE = "_recon_row_checks"
CREDITABLE_UNKNOWN_ALIAS = 1
CREDITABLE_NO_ID = 2
CREDITABLE_MISSING = 3
CREDITABLE_OTHER_USER = 4
TS_NULL_CREATED = 1
TS_AFTER_CUTOFF = 2
TS_BEFORE_PREVIOUS = 3
TS_UPDATED_BEFORE_CREATED = 4
ROW_CHECKS_SQL = f"""
create or replace temp table {ROW_CHECKS_TABLE} as
with known_users as (
    select distinct id from {USERS}
),
quarantined_users as (
    select id, min(reason) as reason from {QUARANTINED_USERS} where id is not null group by id
),
cutoff as (
    select date_trunc('second', cast($cutoff_at as timestamp)) as cutoff_at
),
priced as (
    select
        r.*,
        case
            when r.effect_code in ({EFFECT_RESET}, {EFFECT_PURCHASE})
                then cast(r.calculative_index as double)
            when r.calculation_type = 'fixed' then r.event_value
            when r.calculation_type = 'calculative' and r.effect_code = {EFFECT_SPEND}
                then ceil(r.event_value * (cast(r.calculative_index as double) / 2.0))
            when r.calculation_type = 'calculative' and r.effect_code = {EFFECT_ADD}
                then ceil(r.event_value * cast(r.calculative_index as double))
        end as price,
        r.creditable_type in ($faceless_alias, $real_clone_alias, $speech_alias, $video_alias)
            as extracted_alias,
        r.creditable_type in ($keyword_alias, $generator_alias, $media_alias, $character_alias)
            as unextracted_alias
    from {SCOPED_ROWS_TABLE} as r
),
checked as (
    select
        r.id,
        r.user_id,
        r.credit_events_id,
        r.creditable_type,
        r.creditable_id,
        r.calculative_index,
        r.amount,
        r.event_type,
        r.created_at,
        r.updated_at,
        r.event_name,
        r.declared_type,
        r.calculation_type,
        r.min_amount,
        r.price,
        c.owner_id,
        k.cutoff_at,
        r.event_known and r.event_type is distinct from r.declared_type as type_mismatch,
        r.event_known and r.event_name is distinct from $refund_event
            and r.price is not null and cast(r.amount as double) <> r.price as wrong_price,
        r.event_known and r.event_name is distinct from $refund_event
            and r.effect_code = {EFFECT_SPEND} and r.min_amount is not null
            and cast(r.amount as double) < r.min_amount as below_minimum,
        u.id is null as orphan_user,
        case when u.id is null then q.reason end as user_quarantine_reason,
        u.id is null and q.id is not null as user_quarantined,
        not r.event_known as orphan_event,
        case
            when r.creditable_type is null or r.unextracted_alias then null
            when not r.extracted_alias then {CREDITABLE_UNKNOWN_ALIAS}
            when r.creditable_id is null then {CREDITABLE_NO_ID}
            when c.id is null then {CREDITABLE_MISSING}
            when c.owner_id is not null and c.owner_id <> r.user_id then {CREDITABLE_OTHER_USER}
        end as creditable_problem,
        case
            when r.created_at is null then {TS_NULL_CREATED}
            when r.created_at >= k.cutoff_at + interval 1 second then {TS_AFTER_CUTOFF}
            when r.updated_at < r.created_at
                and date_trunc('second', r.updated_at) < date_trunc('second', r.created_at)
                then {TS_UPDATED_BEFORE_CREATED}
        end as timestamp_problem
    from priced as r
    cross join cutoff as k
    left join known_users as u on u.id = r.user_id
    left join quarantined_users as q on q.id = r.user_id
    left join {CONTENT_KEYS_TABLE} as c on c.alias = r.creditable_type and c.id = r.creditable_id
)
select *
from checked
where type_mismatch
    or wrong_price
    or below_minimum
    or orphan_user
    or orphan_event
    or creditable_problem is not null
    or timestamp_problem is not null
"""

EVENT_TYPE_MISMATCH_SQL = f"""
select
    '{rc.EVENT_TYPE_MISMATCH}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    {_text("declared_type")} as expected,
    {_text("event_type")} as actual,
    'event ' || {_show_str("event_name")} || ' has type ' || {_show("declared_type")}
        || ' but the row was written with event_type ' || {_show("event_type")} as detail,
    amount as credits
from {ROW_CHECKS_TABLE}
where type_mismatch
"""

PRICING_MISMATCH_SQL = f"""
select
    '{rc.PRICING_MISMATCH}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case when wrong_price then {_text("price")} else {_text("min_amount")} end as expected,
    {_text("amount")} as actual,
    case
        when wrong_price and below_minimum then
            'event ' || {_show_str("event_name")} || ' (' || calculation_type || ', index '
            || {_show("calculative_index")} || ') prices ' || {_show("price")}
            || ' and charges at least ' || {_show("min_amount")} || ', the row moved '
            || {_show("amount")}
        when wrong_price then
            'event ' || {_show_str("event_name")} || ' (' || calculation_type || ', index '
            || {_show("calculative_index")} || ') prices ' || {_show("price")}
            || ', the row moved ' || {_show("amount")}
        else
            'spend of ' || {_show("amount")} || ' is below the minimum '
            || {_show("min_amount")} || ' of event ' || {_show_str("event_name")}
    end as detail,
    case
        when wrong_price then cast(abs(cast(amount as double) - price) as bigint)
        else cast(ceil(min_amount - cast(amount as double)) as bigint)
    end as credits
from {ROW_CHECKS_TABLE}
where wrong_price or below_minimum
"""

# Spend rows on a creditable and all refund rows, with the running sums excess_refund needs and
# the last refund before each row that double_charge needs: one window, materialized once.
CREDITED_TABLE = "_recon_credited"
CREDITED_SQL = f"""
create or replace temp table {CREDITED_TABLE} as
with credited as (
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
    from {SCOPED_ROWS_TABLE} as r
    where r.event_name = $refund_event
        or (r.effect_code = {EFFECT_SPEND}
            and r.creditable_type is not null and r.creditable_id is not null)
)
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
"""

EXCESS_REFUND_SQL = f"""
select
    '{rc.EXCESS_REFUND}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    {_text("charged")} as expected,
    {_text("refunded")} as actual,
    'refunds of ' || creditable_type || ' ' || {_show("creditable_id")} || ' reach '
        || {_show("refunded")} || ' credits, but only ' || {_show("charged")}
        || ' were charged for it before' as detail,
    least(refunded - charged, amount) as credits
from {CREDITED_TABLE}
where is_refund
    and creditable_type is not null
    and creditable_id is not null
    and refunded > charged
union all
select
    '{rc.EXCESS_REFUND}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text("amount")} as actual,
    'refund of ' || {_show("amount")} || ' credits names no creditable ('
        || 'creditable_type ' || {_show_str("creditable_type")} || ', creditable_id '
        || {_show("creditable_id")} || ')' as detail,
    amount as credits
from {CREDITED_TABLE}
where is_refund and (creditable_type is null or creditable_id is null)
"""

DOUBLE_CHARGE_SQL = f"""
with timed_spends as (
    select
        id,
        user_id,
        credit_events_id,
        creditable_type,
        creditable_id,
        amount,
        {_seconds("created_at")} as created_s,
        last_refund_id
    from {CREDITED_TABLE}
    where is_spend and created_at is not null
),
repeats as (
    select
        later.id,
        later.user_id,
        later.creditable_type,
        later.creditable_id,
        later.amount,
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
    group by later.id, later.user_id, later.creditable_type, later.creditable_id, later.amount
)
select
    '{rc.DOUBLE_CHARGE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text("amount")} as actual,
    'charges ' || creditable_type || ' ' || {_show("creditable_id")} || ' again '
        || 'less than 60 s after row ' || {_show("earlier_id")}
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
    'completed ' || c.alias || ' ' || {_show("c.id")} || ' has no ' || c.charge
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

# A user quarantined by the extraction (`raw.users__rejected`) is in the source but not in the
# loaded `users`: its rows stay `orphan_user` (the contract's code for exactly that), and the detail
# names the quarantine and its reason instead of claiming the user does not exist. The user has no
# row in `marts.user_balance_reconciliation`: its stored pools are what could not be read, and a row
# would have to invent them or a status outside the contract's three; the detail says so instead.
ORPHAN_USER_SQL = f"""
select
    '{rc.ORPHAN_USER}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text("user_id")} as actual,
    case
        when user_quarantined then
            'user ' || {_show("user_id")} || ' was quarantined in ' || $users_quarantine || ': '
            || coalesce(user_quarantine_reason, 'no reason recorded')
            || '; not reconciled (no row in marts.user_balance_reconciliation)'
            || ' until the row is fixed'
        else 'user ' || {_show("user_id")} || ' is not in users'
    end as detail,
    amount as credits
from {ROW_CHECKS_TABLE}
where orphan_user
"""

ORPHAN_EVENT_SQL = f"""
select
    '{rc.ORPHAN_EVENT}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    null as expected,
    {_text("credit_events_id")} as actual,
    'credit event ' || {_show("credit_events_id")} || ' is not in credit_events' as detail,
    amount as credits
from {ROW_CHECKS_TABLE}
where orphan_event
"""

ORPHAN_CREDITABLE_SQL = f"""
select
    '{rc.ORPHAN_CREDITABLE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case when creditable_problem = {CREDITABLE_OTHER_USER} then {_text("user_id")} end as expected,
    case creditable_problem
        when {CREDITABLE_UNKNOWN_ALIAS} then creditable_type
        when {CREDITABLE_MISSING} then {_text("creditable_id")}
        when {CREDITABLE_OTHER_USER} then {_text("owner_id")}
    end as actual,
    case creditable_problem
        when {CREDITABLE_UNKNOWN_ALIAS} then
            'creditable_type ' || {_show_str("creditable_type")} || ' is not a known alias'
        when {CREDITABLE_NO_ID} then
            'creditable_type ' || creditable_type || ' with a NULL creditable_id names no row'
        when {CREDITABLE_MISSING} then
            creditable_type || ' ' || {_show("creditable_id")} || ' does not exist'
        else
            creditable_type || ' ' || {_show("creditable_id")} || ' belongs to user '
            || {_show("owner_id")} || ', not to user ' || {_show("user_id")}
    end as detail,
    amount as credits
from {ROW_CHECKS_TABLE}
where creditable_problem is not null
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
    from {SCOPED_ROWS_TABLE}
    where event_name = $monthly_event and created_at is not null
)
select
    '{rc.DUPLICATE_MONTHLY_RELEASE}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    '1' as expected,
    {_text("nth")} as actual,
    'release number ' || {_show("nth")} || ' of monthly credits in '
        || strftime(created_at, '%Y-%m') || ' (UTC)' as detail,
    amount as credits
from releases
where nth > 1
"""

# The sequential half (created_at before the user's previous row) comes from the replay, in
# TS_PREVIOUS_TABLE(id, user_id, amount, created_at, previous_created_at); one anomaly per row
# whatever the reasons, the first reason in this order: NULL, after the cut-off, before the
# previous row, updated before created.
TIMESTAMP_ORDER_SQL = f"""
with reasons as (
    select
        coalesce(c.id, p.id) as id,
        coalesce(c.user_id, p.user_id) as user_id,
        coalesce(c.amount, p.amount) as amount,
        coalesce(c.created_at, p.created_at) as created_at,
        c.updated_at,
        c.cutoff_at,
        p.previous_created_at,
        case
            when c.timestamp_problem in ({TS_NULL_CREATED}, {TS_AFTER_CUTOFF})
                then c.timestamp_problem
            when p.id is not null then {TS_BEFORE_PREVIOUS}
            else c.timestamp_problem
        end as problem
    from (select * from {ROW_CHECKS_TABLE} where timestamp_problem is not null) as c
    full outer join {TS_PREVIOUS_TABLE} as p on p.id = c.id
)
select
    '{rc.TIMESTAMP_ORDER}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    case problem
        when {TS_AFTER_CUTOFF} then {_iso("cutoff_at")}
        when {TS_BEFORE_PREVIOUS} then {_iso("previous_created_at")}
        when {TS_UPDATED_BEFORE_CREATED} then {_iso("created_at")}
    end as expected,
    case problem
        when {TS_UPDATED_BEFORE_CREATED} then {_iso("updated_at")}
        when {TS_NULL_CREATED} then null
        else {_iso("created_at")}
    end as actual,
    case problem
        when {TS_NULL_CREATED} then 'created_at is NULL'
        when {TS_AFTER_CUTOFF} then 'created_at ' || {_iso("created_at")}
            || ' is after the extraction cut-off ' || {_iso("cutoff_at")}
        when {TS_BEFORE_PREVIOUS} then 'created_at ' || {_iso("created_at")}
            || ' is before the user''s previous row (' || {_iso("previous_created_at")} || ')'
        else 'updated_at ' || {_iso("updated_at")} || ' is before created_at '
            || {_iso("created_at")}
    end as detail,
    amount as credits
from reasons
"""

# The three rules that read the replay (ledger/replay.py): the rows it flagged, one per row, in
# REPLAY_ROWS_TABLE, and the pools it ends with next to the stored ones, per user, in
# RECONCILIATION_WORK_TABLE. reconcile.py builds both from the replay, then runs these.
REPLAY_ROWS_TABLE = "_recon_replay_rows"
RECONCILIATION_WORK_TABLE = "_recon_reconciliation"

CHAIN_BREAK_SQL = f"""
select
    '{rc.CHAIN_BREAK}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    {_text("expected_previous")} as expected,
    {_text("previous_amount")} as actual,
    case
        when is_purchase then 'previous_amount should record the purchased pool after the '
            || 'purchase: the replay expected ' || {_show("expected_previous")}
            || ', the row recorded ' || {_show("previous_amount")}
        else 'previous_amount should record the subscription pool before the row: the replay '
            || 'expected ' || {_show("expected_previous")} || ', the row recorded '
            || {_show("previous_amount")}
    end as detail,
    coalesce(abs(previous_amount - expected_previous), expected_previous) as credits
from {REPLAY_ROWS_TABLE}
where flags & $chain_bit <> 0
"""

OVERDRAFT_SQL = f"""
select
    '{rc.OVERDRAFT_WRITEOFF}' as rule,
    user_id,
    id as credit_history_id,
    $row_entity as entity_type,
    id as entity_id,
    {_text("available")} as expected,
    {_text("amount")} as actual,
    'spend of ' || {_show("amount")} || ' exceeds both pools together ('
        || {_show("available")} || '): ' || {_show("amount - available")}
        || ' credits written off' as detail,
    amount - available as credits
from {REPLAY_ROWS_TABLE}
where flags & $overdraft_bit <> 0
"""

BALANCE_DRIFT_SQL = f"""
select
    '{rc.BALANCE_DRIFT}' as rule,
    user_id,
    cast(null as bigint) as credit_history_id,
    $user_entity as entity_type,
    user_id as entity_id,
    {_text("ledger_subscription_balance")} as expected,
    {_text("recorded_subscription_balance")} as actual,
    'subscription pool (remaining_credit_amount): the ledger ends at '
        || {_show("ledger_subscription_balance")} || ', users stores '
        || {_show("recorded_subscription_balance")} as detail,
    abs(recorded_subscription_balance - ledger_subscription_balance) as credits
from {RECONCILIATION_WORK_TABLE}
where recorded_subscription_balance <> ledger_subscription_balance
union all
select
    '{rc.BALANCE_DRIFT}' as rule,
    user_id,
    cast(null as bigint) as credit_history_id,
    $user_entity as entity_type,
    user_id as entity_id,
    {_text("ledger_purchased_balance")} as expected,
    {_text("recorded_purchased_balance")} as actual,
    'purchased pool (extra_credits): the ledger ends at '
        || {_show("ledger_purchased_balance")} || ', users stores '
        || {_show("recorded_purchased_balance")} as detail,
    abs(recorded_purchased_balance - ledger_purchased_balance) as credits
from {RECONCILIATION_WORK_TABLE}
where recorded_purchased_balance <> ledger_purchased_balance
"""

# Statement per replay rule, in the order they run after the replay.
REPLAY_RULE_SQL: dict[str, str] = {
    rc.CHAIN_BREAK: CHAIN_BREAK_SQL,
    rc.BALANCE_DRIFT: BALANCE_DRIFT_SQL,
    rc.OVERDRAFT_WRITEOFF: OVERDRAFT_SQL,
}

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
