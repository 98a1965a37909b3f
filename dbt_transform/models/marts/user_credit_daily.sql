{#-
    One row per user and day with ledger activity, kept incrementally. A run recomputes only the
    users the replay touched (int_credit_replay_delta), from each one's first touched day (the
    earliest day of a re-replayed row, before or after the run): the day's flows and closing
    balances from int_credit_replay, the opening balance of the first recomputed day from the
    user's stored previous day. A full run (first build or --full-refresh) aggregates the whole
    replay.

    Rows may move to a later day (a late commit, a capped day), so the touched users' stored days
    from their first touched day are replaced, not merged:
    - on DuckDB a pre-hook deletes them and the recomputed rows are appended, in one transaction;
    - on BigQuery (partitioned by balance_date, clustered by user_id) whole day partitions are
      replaced (insert_overwrite): the recomputed rows plus the stored rows of the other users on
      those days. A day on which only touched users had rows, and none of them has rows any more,
      is not replaced (limitation documented in docs/deployment.md).
-#}
-- depends_on: {{ ref('int_credit_replay_delta') }}
{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite' if target.type == 'bigquery' else 'append',
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
    pre_hook=[] if target.type == 'bigquery' else ['{{ delete_touched_user_days() }}'],
    on_schema_change='fail',
) }}
{%- set touched_from = none -%}
{%- if execute and is_incremental() -%}
    {%- set first_touched = run_query(
        'select min(case when replaced_balance_date < balance_date then replaced_balance_date'
        ~ ' else balance_date end) from ' ~ ref('int_credit_replay_delta')
    ).columns[0].values()[0] -%}
    {#- nothing touched: a day no row can be on, so that the run replaces nothing -#}
    {%- set touched_from = "cast('" ~ (first_touched or '9999-12-31') ~ "' as date)" -%}
{%- endif -%}
with

{%- if touched_from is none %}

replayed_rows as (

    select * from {{ ref('int_credit_replay') }}

),

{%- else %}

-- the users the replay touched, from the first day it touched (rows moved from one day to
-- another count on both)
touched_users as (

    select
        user_id,
        min(
            case when replaced_balance_date < balance_date then replaced_balance_date else balance_date end
        ) as first_touched_day
    from {{ ref('int_credit_replay_delta') }}
    group by user_id

),

replayed_rows as (

    select replay.*
    from {{ ref('int_credit_replay') }} as replay
    inner join touched_users
        on replay.user_id = touched_users.user_id
        and replay.balance_date >= touched_users.first_touched_day
    where replay.balance_date >= {{ touched_from }}

),

stored_days as (

    select * from {{ this }}

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
        from stored_days
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
        cast(sum(written_off_credits) as {{ dbt.type_bigint() }}) as credits_written_off
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
            *,
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
        daily_flows.*,
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

),

daily_rows as (

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
    ledger_rows
from daily_balances

)

{%- if touched_from is none or target.type != 'bigquery' %}

select * from daily_rows

{%- else %}

,

-- every day the run replaces: the recomputed ones and those the touched users' rows left
replaced_days as (

    select balance_date from daily_rows

    union all

    select stored_days.balance_date
    from stored_days
    inner join touched_users
        on stored_days.user_id = touched_users.user_id
        and stored_days.balance_date >= touched_users.first_touched_day
    where stored_days.balance_date >= {{ touched_from }}

)

select * from daily_rows

union all

-- the rest of those days: the stored rows of the users the run did not touch there
select stored_days.*
from stored_days
left join touched_users
    on stored_days.user_id = touched_users.user_id
    and stored_days.balance_date >= touched_users.first_touched_day
where stored_days.balance_date >= {{ touched_from }}
    and stored_days.balance_date in (select balance_date from replaced_days)
    and touched_users.user_id is null

{%- endif %}
