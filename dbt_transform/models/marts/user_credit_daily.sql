{#-
    One row per user and day with ledger activity: the day's flows and its closing balances, from
    the reconciliation's replay row by row (int_credit_replay). Rebuilt whole on every run: the
    replay it reads is the reconciliation's, already maintained incrementally with its state, and
    an aggregate over it cannot disagree with the report (the latest closing pools of a user are
    marts.user_balance_reconciliation's ledger pools, credits_pipeline_tests/test_one_replay.py).
-#}
{#- On BigQuery partitioned by day and clustered by user, for the readers' pruning. -#}
{{ config(
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
) }}
{%- set replay_columns = [
    'credit_history_id', 'user_id', 'balance_date', 'effect', 'service', 'amount',
    'forfeited_credits', 'written_off_credits', 'subscription_after', 'purchased_after',
    'balance_after',
] -%}
with

replayed_rows as (

    select {{ replay_columns | join(', ') }}
    from {{ ref('int_credit_replay') }}

),

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
        {#- the pools after the day's last row: its largest id (the replay's order within a user) #}
        {{ last_by('subscription_after', 'credit_history_id') }} as closing_subscription_balance,
        {{ last_by('purchased_after', 'credit_history_id') }} as closing_purchased_balance,
        {{ last_by('balance_after', 'credit_history_id') }} as closing_balance
    from replayed_rows
    group by user_id, balance_date

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
        coalesce(
            lag(daily_flows.closing_balance) over (
                partition by daily_flows.user_id
                order by daily_flows.balance_date
            ),
            0
        ) as opening_balance,
        daily_flows.closing_subscription_balance,
        daily_flows.closing_purchased_balance,
        daily_flows.closing_balance
    from daily_flows

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
    ledger_rows
from daily_balances
