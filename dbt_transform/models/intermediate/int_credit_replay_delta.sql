{#-
    The contract's ledger replay (section 2, with "continuing after a row" of section 5), one row
    per ledger row, in SQL: the rows this run (re)computes, which int_credit_replay takes in.

    The subscription pool needs no recursion: before every reset, add or spend row it restarts from
    the row's recorded previous_amount, so the pool after the row is a function of that row alone
    and of the purchased pool before it. The purchased pool is the only sequential state, and only
    two kinds of row move it: purchase rows (which set it to their recorded snapshot) and spend rows
    the recorded subscription pool cannot cover. A recursive CTE walks just those rows, per user;
    window functions carry both pools to every other row. Each user starts from a state (row
    number, both pools, running day): zero for a user replayed from the first row.

    A full run (int_credit_replay missing, or --full-refresh) replays the whole ledger. Otherwise
    the run resumes from int_credit_replay as the previous run left it (read by name, not by ref:
    it is built from this model):
    - it reads the ledger partitions from the latest balance_date stored on (`replayed_through`)
      plus the open snapshot, not the whole history;
    - a user whose rows there are all new and above the user's stored last id resumes from the
      user's last stored row (both pools, row number, running day);
    - a user is replayed again from the first row, from the stored rows plus the rows read, when
      one of those rows is a late commit (an id below the user's stored last id) or differs from
      the stored copy, when a stored row's day depended on the previous cut-off (a row capped at
      it, a row without created_at, or a day after the new cut-off), or when a row without
      created_at comes before the user's first dated row (its day is the user's first day).
    What it does not see on its own: a ledger row that is gone (deleted, or now quarantined).
    The Dagster step looks for replayed ids the raw ledger no longer holds and then runs this
    model with --full-refresh (credits_pipeline/transform/replay_rebuild.py); a dbt run outside
    Dagster needs the same flag after such a delete (docs/deployment.md).

    The model is a log: each run appends the rows it (re)computed, stamped with the run's time
    (`replayed_at`, macros/incremental_runs.sql), so that the daily mart can take in every run it
    has not seen yet. On BigQuery it is partitioned by that time's day (`replayed_on`: a run reads
    only its own partition) and appended with a merge that matches nothing.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge' if target.type == 'bigquery' else 'append',
    partition_by={'field': 'replayed_on', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
    on_schema_change='fail',
) }}
{%- set replay_relation = adapter.get_relation(
    database=this.database, schema=this.schema, identifier='int_credit_replay') -%}
{%- set resume = execute and replay_relation is not none and not flags.FULL_REFRESH -%}
{%- set replayed_through = none -%}
{%- set cutoff_date = none -%}
{%- if resume -%}
    {%- set cutoff_date = run_query(
        'select cast(cutoff_at as date) from ' ~ source('raw', 'extraction_cutoff')
    ).columns[0].values()[0] -%}
    {#- the latest stored day: looked for in the last week's partitions first (pruned) -#}
    {%- set lookback_from = modules.datetime.date.fromordinal(
        cutoff_date.toordinal() - var('replay_watermark_lookback_days')) -%}
    {%- set replayed_through = run_query(
        'select max(balance_date) from ' ~ replay_relation
        ~ " where balance_date >= cast('" ~ lookback_from ~ "' as date)"
    ).columns[0].values()[0] -%}
    {%- if replayed_through is none -%}
        {%- set replayed_through = run_query(
            'select max(balance_date) from ' ~ replay_relation
        ).columns[0].values()[0] -%}
    {%- endif -%}
    {%- if replayed_through is none -%}
        {%- set resume = false -%}
    {%- endif -%}
{%- endif -%}
{%- set rows_from = (
    "cast('" ~ (replayed_through if replayed_through < cutoff_date else cutoff_date) ~ "' as date)"
) if resume else none -%}
{#- rendered at parse time too, so that its sources and refs are dependencies of this model -#}
{%- set seen_ledger_rows = credit_history_rows(closed_partitions_from=rows_from) -%}
{#- the ledger's columns as the replay reads them (credits.credit_histories' names) -#}
{%- set ledger_columns_replayed -%}
credit_history_id,
        user_id,
        event_name,
        effect,
        service,
        creditable_type,
        creditable_id,
        unsigned_amount as amount,
        cast(previous_amount as {{ dbt.type_bigint() }}) as recorded_pool,
        created_at
{%- endset -%}
{%- set replayed_columns = [
    'credit_history_id', 'user_id', 'event_name', 'effect', 'service', 'creditable_type',
    'creditable_id', 'amount', 'recorded_pool', 'created_at',
] -%}
with recursive

extraction_cutoff as (

    select cast(cutoff_at as date) as cutoff_date
    from {{ source('raw', 'extraction_cutoff') }}

),

{% if not resume -%}

replay_input as (

    select
        {{ ledger_columns_replayed }},
        cast(0 as {{ dbt.type_bigint() }}) as start_row_number,
        cast(0 as {{ dbt.type_bigint() }}) as start_subscription,
        cast(0 as {{ dbt.type_bigint() }}) as start_purchased,
        cast(null as date) as start_running_date,
        cast(null as date) as replaced_balance_date
    from {{ ref('credit_histories') }}

),

{%- else -%}

seen_rows as (

    select
        {{ ledger_columns_replayed }}
    from (
        {{ seen_ledger_rows | indent(8) }}
    ) as seen_ledger

),

seen_users as (

    select distinct user_id from seen_rows

),

-- the stored rows of the users the run sees (the stored replay's columns are qualified: it is
-- read by name, so its columns are unknown to the column lineage's SQL parser)
stored_rows_of_seen_users as (

    select
        {%- for column in replayed_columns %}
        stored.{{ column }},
        {%- endfor %}
        stored.balance_date,
        stored.user_row_number,
        stored.subscription_after,
        stored.purchased_after
    from {{ replay_relation }} as stored
    where stored.user_id in (select user_id from seen_users)

),

-- the stored rows whose day depended on the previous cut-off: they all sit on its day, the
-- latest stored one (or after the new cut-off, when it went back)
cutoff_dependent_users as (

    select distinct stored.user_id
    from {{ replay_relation }} as stored
    where stored.balance_date >= {{ rows_from }}
        and (
            stored.created_at is null
            or cast(stored.created_at as date) > stored.balance_date
            or stored.balance_date > cast('{{ cutoff_date }}' as date)
        )

),

seen_rows_against_stored as (

    select
        {%- for column in replayed_columns %}
        seen_rows.{{ column }},
        {%- endfor %}
        stored.credit_history_id is not null as is_stored,
        stored.credit_history_id is not null and (
            {%- for column in replayed_columns if column != 'credit_history_id' %}
            {{ 'or ' if not loop.first }}seen_rows.{{ column }} is distinct from stored.{{ column }}
            {%- endfor %}
        ) as is_changed
    from seen_rows
    left join stored_rows_of_seen_users as stored
        on seen_rows.credit_history_id = stored.credit_history_id

),

stored_user_states as (

    select
        user_id,
        max(credit_history_id) as stored_last_id,
        min(case when created_at is null then user_row_number end) as first_undated_row,
        min(case when created_at is not null then user_row_number end) as first_dated_row
    from stored_rows_of_seen_users
    group by user_id

),

last_stored_rows as (

    select user_id, user_row_number, subscription_after, purchased_after, balance_date
    from (
        select
            user_id,
            user_row_number,
            subscription_after,
            purchased_after,
            balance_date,
            row_number() over (partition by user_id order by credit_history_id desc)
                as position_from_end
        from stored_rows_of_seen_users
    ) as ranked_rows
    where position_from_end = 1

),

users_to_replay_again as (

    select seen.user_id
    from seen_rows_against_stored as seen
    inner join stored_user_states as states
        on seen.user_id = states.user_id
    where seen.is_changed
        or (not seen.is_stored and seen.credit_history_id < states.stored_last_id)
        or (
            not seen.is_stored
            and states.first_undated_row is not null
            and (states.first_dated_row is null or states.first_undated_row < states.first_dated_row)
        )

    union all

    select user_id from cutoff_dependent_users

),

-- users replayed from the first row: the stored rows the run did not read again, and every row
-- it read
rows_replayed_again as (

    select
        {%- for column in replayed_columns %}
        stored.{{ column }},
        {%- endfor %}
        stored.balance_date as replaced_balance_date
    from {{ replay_relation }} as stored
    where stored.user_id in (select user_id from users_to_replay_again)
        and stored.credit_history_id not in (select credit_history_id from seen_rows)

    union all

    select
        {%- for column in replayed_columns %}
        seen.{{ column }},
        {%- endfor %}
        stored.balance_date as replaced_balance_date
    from seen_rows as seen
    left join stored_rows_of_seen_users as stored
        on seen.credit_history_id = stored.credit_history_id
    where seen.user_id in (select user_id from users_to_replay_again)

),

replay_input as (

    select
        {{ replayed_columns | join(', ') }},
        cast(0 as {{ dbt.type_bigint() }}) as start_row_number,
        cast(0 as {{ dbt.type_bigint() }}) as start_subscription,
        cast(0 as {{ dbt.type_bigint() }}) as start_purchased,
        cast(null as date) as start_running_date,
        replaced_balance_date
    from rows_replayed_again

    union all

    -- new rows of the other users, from the state of the user's last stored row (a user without
    -- stored rows starts from zero)
    select
        {%- for column in replayed_columns %}
        seen.{{ column }},
        {%- endfor %}
        coalesce(last_stored_rows.user_row_number, 0) as start_row_number,
        coalesce(last_stored_rows.subscription_after, 0) as start_subscription,
        coalesce(last_stored_rows.purchased_after, 0) as start_purchased,
        last_stored_rows.balance_date as start_running_date,
        cast(null as date) as replaced_balance_date
    from seen_rows_against_stored as seen
    left join last_stored_rows
        on seen.user_id = last_stored_rows.user_id
    where not seen.is_stored
        and seen.user_id not in (select user_id from users_to_replay_again)

),

{%- endif %}

purchased_pool_moves as (

    select
        user_id,
        credit_history_id,
        effect,
        amount,
        recorded_pool,
        start_purchased,
        row_number() over (partition by user_id order by credit_history_id) as move_number
    from replay_input
    where effect = 'purchase'
        or (effect = 'spend' and recorded_pool < amount)

),

purchased_pool_replay as (

    select
        user_id,
        move_number,
        credit_history_id,
        start_purchased as purchased_before,
        cast(
            case
                when effect = 'purchase' then recorded_pool
                when start_purchased >= amount then start_purchased - amount
                when start_purchased - (amount - recorded_pool) > 0
                    then start_purchased - (amount - recorded_pool)
                else 0
            end
        as {{ dbt.type_bigint() }}) as purchased_after
    from purchased_pool_moves
    where move_number = 1

    union all

    select
        next_move.user_id,
        next_move.move_number,
        next_move.credit_history_id,
        replayed.purchased_after as purchased_before,
        cast(
            case
                when next_move.effect = 'purchase' then next_move.recorded_pool
                when replayed.purchased_after >= next_move.amount
                    then replayed.purchased_after - next_move.amount
                when replayed.purchased_after - (next_move.amount - next_move.recorded_pool) > 0
                    then replayed.purchased_after - (next_move.amount - next_move.recorded_pool)
                else 0
            end
        as {{ dbt.type_bigint() }}) as purchased_after
    from purchased_pool_replay as replayed
    inner join purchased_pool_moves as next_move
        on next_move.user_id = replayed.user_id
        and next_move.move_number = replayed.move_number + 1

),

ledger_with_purchased_pool as (

    select
        {%- for column in replayed_columns %}
        replay_input.{{ column }},
        {%- endfor %}
        replay_input.start_row_number,
        replay_input.start_subscription,
        replay_input.start_running_date,
        replay_input.replaced_balance_date,
        purchased_pool_replay.purchased_before as move_purchased_before,
        coalesce(
            last_value(purchased_pool_replay.purchased_after ignore nulls) over (
                partition by replay_input.user_id
                order by replay_input.credit_history_id
                rows between unbounded preceding and current row
            ),
            replay_input.start_purchased
        ) as purchased_after
    from replay_input
    left join purchased_pool_replay
        on replay_input.credit_history_id = purchased_pool_replay.credit_history_id
        and replay_input.user_id = purchased_pool_replay.user_id

),

ledger_with_row_moves as (

    select
        {{ replayed_columns | join(', ') }},
        start_row_number,
        start_subscription,
        start_running_date,
        replaced_balance_date,
        purchased_after,
        coalesce(move_purchased_before, purchased_after) as purchased_before,
        case
            when effect = 'reset' then amount
            when effect = 'add' then recorded_pool + amount
            when effect = 'spend' and recorded_pool >= amount then recorded_pool - amount
            when effect = 'spend' and coalesce(move_purchased_before, purchased_after) >= amount
                then recorded_pool
            when effect = 'spend' then 0
        end as row_subscription_after,
        case when effect = 'reset' then recorded_pool else 0 end as forfeited_credits,
        case
            when effect = 'spend'
                and amount > recorded_pool + coalesce(move_purchased_before, purchased_after)
                then amount - recorded_pool - coalesce(move_purchased_before, purchased_after)
            else 0
        end as written_off_credits,
        case
            when created_at is null then null
            when cast(created_at as date) > extraction_cutoff.cutoff_date
                then extraction_cutoff.cutoff_date
            else cast(created_at as date)
        end as capped_created_date,
        extraction_cutoff.cutoff_date
    from ledger_with_purchased_pool
    cross join extraction_cutoff

),

ledger_with_pools as (

    select
        {{ replayed_columns | join(', ') }},
        start_row_number,
        start_running_date,
        replaced_balance_date,
        purchased_before,
        purchased_after,
        forfeited_credits,
        written_off_credits,
        cutoff_date,
        coalesce(
            last_value(row_subscription_after ignore nulls) over (
                partition by user_id
                order by credit_history_id
                rows between unbounded preceding and current row
            ),
            start_subscription
        ) as subscription_after,
        max(capped_created_date) over (
            partition by user_id
            order by credit_history_id
            rows between unbounded preceding and current row
        ) as running_created_date,
        min(capped_created_date) over (partition by user_id) as first_created_date,
        row_number() over (partition by user_id order by credit_history_id) as row_number_in_run
    from ledger_with_row_moves

),

ledger_with_days as (

    select
        {{ replayed_columns | join(', ') }},
        start_row_number,
        replaced_balance_date,
        purchased_before,
        purchased_after,
        forfeited_credits,
        written_off_credits,
        cutoff_date,
        subscription_after,
        first_created_date,
        row_number_in_run,
        -- the resumed running day: the later of the stored one and the run's own
        case
            when start_running_date is null then running_created_date
            when running_created_date is null or running_created_date < start_running_date
                then start_running_date
            else running_created_date
        end as resumed_created_date
    from ledger_with_pools

)

select
    credit_history_id,
    user_id,
    event_name,
    effect,
    service,
    creditable_type,
    creditable_id,
    amount,
    recorded_pool,
    created_at,
    coalesce(resumed_created_date, first_created_date, cutoff_date) as balance_date,
    start_row_number + row_number_in_run as user_row_number,
    case when effect in ('reset', 'add', 'spend') then recorded_pool end as subscription_before,
    purchased_before,
    subscription_after,
    purchased_after,
    subscription_after + purchased_after as balance_after,
    forfeited_credits,
    written_off_credits,
    replaced_balance_date,
    {{ replay_run_timestamp() }} as replayed_at,
    {{ replay_run_day() }} as replayed_on
from ledger_with_days
