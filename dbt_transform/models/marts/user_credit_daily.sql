{#-
    One row per user and day with ledger activity, kept incrementally. A run recomputes only the
    users whose replayed rows changed in the replay runs the mart has not taken in yet (the delta's
    log after the newest `replayed_at` the mart stores, macros/incremental_runs.sql), from each
    one's first touched day (the earliest day of a re-replayed row, before or after the run): the
    day's flows and closing balances from int_credit_replay, the opening balance of the first
    recomputed day from the user's stored previous day. A full run (first build or --full-refresh)
    aggregates the whole replay.

    Rows may move to a later day (a late commit, a capped day), so the touched users' stored days
    from their first touched day are deleted by a pre-hook and the recomputed rows appended: in one
    transaction on DuckDB; on BigQuery (partitioned by balance_date, clustered by user_id) the
    delete reads only the partitions from the first touched day, and a failed append leaves an
    older watermark, so the next run recomputes the same users again. A mart build that failed or
    was skipped is likewise caught up by the next one.
-#}
-- depends_on: {{ ref('int_credit_replay_delta') }}
{{ config(
    materialized='incremental',
    incremental_strategy='merge' if target.type == 'bigquery' else 'append',
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
    pre_hook=['{{ delete_touched_user_days() }}'],
    on_schema_change='fail',
) }}
{%- set watermark = daily_mart_watermark() -%}
{#- what the day's flows and closing balances are computed from -#}
{%- set replay_columns = [
    'credit_history_id', 'user_id', 'balance_date', 'effect', 'service', 'amount',
    'forfeited_credits', 'written_off_credits', 'subscription_after', 'purchased_after',
    'balance_after', 'replayed_at',
] -%}
{%- set touched_from = none -%}
{%- if watermark is not none -%}
    {#- nothing touched: a day no row can be on, so that the run recomputes nothing -#}
    {%- set touched_from = first_touched_day_since(watermark) or date_literal('9999-12-31') -%}
{%- endif -%}
with

{%- if touched_from is none %}

replayed_rows as (

    select {{ replay_columns | join(', ') }}
    from {{ ref('int_credit_replay') }}

),

{%- else %}

-- the users the replay touched since the mart's watermark, from the first day it touched
touched_users as (

    {{ touched_users_since(watermark) | indent(4) }}

),

replayed_rows as (

    select
        {%- for column in replay_columns %}
        replay.{{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ ref('int_credit_replay') }} as replay
    inner join touched_users
        on replay.user_id = touched_users.user_id
        and replay.balance_date >= touched_users.first_touched_day
    where replay.balance_date >= {{ touched_from }}

),

previous_closing_balances as (

    select user_id, closing_balance as previous_closing_balance
    from (
        select
            stored_days.user_id,
            stored_days.closing_balance,
            row_number() over (
                partition by stored_days.user_id
                order by stored_days.balance_date desc
            ) as recency
        from {{ this }} as stored_days
        inner join touched_users
            on stored_days.user_id = touched_users.user_id
            and stored_days.balance_date < touched_users.first_touched_day
    ) as ranked_days
    where recency = 1

),

{%- endif %}

daily_flows as (

    select
        user_id,
        balance_date,
        count(*) as ledger_rows,
        cast(sum(case
            when effect = 'reset' or (effect = 'add' and service = 'allocation') then amount
            else 0
        end) as {{ dbt.type_bigint() }}) as credits_allocated,
        cast(sum(case when effect = 'purchase' then amount else 0 end) as {{ dbt.type_bigint() }}) as credits_purchased,
        cast(sum(case when effect = 'add' and service = 'refund' then amount else 0 end) as {{ dbt.type_bigint() }})
            as credits_refunded,
        cast(sum(case
            when effect = 'add' and coalesce(service, '') not in ('allocation', 'refund')
                then amount
            else 0
        end) as {{ dbt.type_bigint() }}) as credits_bonus,
        {%- for service in spend_services() %}
        cast(sum(case when effect = 'spend' and service = '{{ service }}' then amount else 0 end)
            as {{ dbt.type_bigint() }}) as spent_{{ service }},
        {%- endfor %}
        cast(sum(case
            when effect = 'spend'
                and coalesce(service, '') not in ('{{ spend_services() | join("', '") }}')
                then amount
            else 0
        end) as {{ dbt.type_bigint() }}) as spent_other,
        cast(sum(case when effect = 'spend' then amount else 0 end) as {{ dbt.type_bigint() }}) as credits_spent,
        cast(sum(forfeited_credits) as {{ dbt.type_bigint() }}) as credits_forfeited,
        cast(sum(written_off_credits) as {{ dbt.type_bigint() }}) as credits_written_off,
        max(replayed_at) as replayed_at
    from replayed_rows
    group by user_id, balance_date

),

last_row_of_day as (

    select
        user_id,
        balance_date,
        subscription_after as closing_subscription_balance,
        purchased_after as closing_purchased_balance,
        balance_after as closing_balance
    from (
        select
            user_id,
            balance_date,
            subscription_after,
            purchased_after,
            balance_after,
            row_number() over (
                partition by user_id, balance_date
                order by credit_history_id desc
            ) as position_from_end_of_day
        from replayed_rows
    ) as ranked_rows
    where position_from_end_of_day = 1

),

daily_balances as (

    select
        daily_flows.user_id,
        daily_flows.balance_date,
        daily_flows.ledger_rows,
        daily_flows.credits_allocated,
        daily_flows.credits_purchased,
        daily_flows.credits_refunded,
        daily_flows.credits_bonus,
        {%- for service in spend_services() %}
        daily_flows.spent_{{ service }},
        {%- endfor %}
        daily_flows.spent_other,
        daily_flows.credits_spent,
        daily_flows.credits_forfeited,
        daily_flows.credits_written_off,
        daily_flows.replayed_at,
        coalesce(
            lag(last_row_of_day.closing_balance) over (
                partition by daily_flows.user_id
                order by daily_flows.balance_date
            ),
            {%- if touched_from is not none %}
            previous_closing_balances.previous_closing_balance,
            {%- endif %}
            0
        ) as opening_balance,
        last_row_of_day.closing_subscription_balance,
        last_row_of_day.closing_purchased_balance,
        last_row_of_day.closing_balance
    from daily_flows
    inner join last_row_of_day
        on daily_flows.user_id = last_row_of_day.user_id
        and daily_flows.balance_date = last_row_of_day.balance_date
    {%- if touched_from is not none %}
    left join previous_closing_balances
        on daily_flows.user_id = previous_closing_balances.user_id
    {%- endif %}

)

select
    user_id,
    balance_date,
    opening_balance,
    credits_allocated,
    credits_purchased,
    credits_refunded,
    credits_bonus,
    {%- for service in spend_services() %}
    spent_{{ service }},
    {%- endfor %}
    spent_other,
    credits_spent,
    credits_forfeited,
    credits_written_off,
    closing_balance
        - (
            opening_balance + credits_allocated + credits_purchased + credits_refunded
            + credits_bonus - credits_spent - credits_forfeited + credits_written_off
        ) as chain_adjustment,
    closing_subscription_balance,
    closing_purchased_balance,
    closing_balance,
    ledger_rows,
    replayed_at
from daily_balances
