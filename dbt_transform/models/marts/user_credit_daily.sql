{#-
    One row per user and day with ledger activity: the day's flows and its closing balances, from
    the reconciliation's replay row by row (int_credit_replay). An aggregate over that replay cannot
    disagree with the report (the latest closing pools of a user are
    marts.user_balance_reconciliation's ledger pools, credits_pipeline_tests/test_one_replay.py).

    Kept per user on DuckDB, as int_credit_replay is (`macros/kept_per_user.sql`): a run rebuilds,
    for a user the reconciliation resumed, its days from the first day a new row counts on (its
    earlier days stay as kept, and the first rebuilt day opens at the last kept day's closing);
    every day of a user whose replayed past changed (the count or highest replay_sequence of its
    rows numbered by runs this mart saw moved), or who has a row without created_at or dated
    after the last kept day (the day such a row counts on follows the cut-off); and deletes the
    users the replay no longer has. A table rebuilt whole on BigQuery.
-#}
{%- set kept_per_user = target.type == 'duckdb' -%}
{#- On BigQuery partitioned by day and clustered by user, for the readers' pruning. -#}
{{ config(
    materialized='incremental' if kept_per_user else 'table',
    incremental_strategy='append' if kept_per_user else none,
    on_schema_change='append_new_columns' if kept_per_user else none,
    pre_hook=[
        "{{ delete_replaced_rows(ref('int_credit_replay'), ref('int_credit_replay'), 'sum(ledger_rows)', replace_days_from_first_new=true) }}"
    ] if kept_per_user else [],
    post_hook=["{{ delete_vanished_key_groups('user_id', ref('int_credit_replay')) }}"]
        if kept_per_user else [],
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
) }}
{#- After the pre-hook, the kept days are those of the users extended or left alone. -#}
{%- set resume = kept_per_user_resumes() -%}
{%- set replay_columns = [
    'credit_history_id', 'user_id', 'balance_date', 'effect', 'service', 'amount',
    'forfeited_credits', 'written_off_credits', 'subscription_after', 'purchased_after',
    'balance_after', 'replay_sequence',
] -%}
with
{% if resume %}
kept_users as (

    select
        user_id,
        max(balance_date) as last_balance_date,
        {{ last_by('closing_balance', 'balance_date') }} as last_closing_balance
    from {{ this }}
    group by user_id

),
{% endif %}
replayed_rows as (

    select
        {%- for column in replay_columns %}
        replayed.{{ column }},
        {%- endfor %}
        {%- if resume %}
        kept_users.last_closing_balance as kept_closing_balance
        {%- else %}
        cast(null as {{ dbt.type_bigint() }}) as kept_closing_balance
        {%- endif %}
    from {{ ref('int_credit_replay') }} as replayed
    {%- if resume %}
    -- a kept user's rows on days after its kept ones; every row of a user not kept
    left join kept_users
        on replayed.user_id is not distinct from kept_users.user_id
    where kept_users.last_balance_date is null
        or replayed.balance_date > kept_users.last_balance_date
    {%- endif %}

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
        {{ last_by('balance_after', 'credit_history_id') }} as closing_balance,
        max(replay_sequence) as replay_sequence,
        max(kept_closing_balance) as kept_closing_balance
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
            -- the first day rebuilt for an extended user opens at its last kept day's closing
            daily_flows.kept_closing_balance,
            0
        ) as opening_balance,
        daily_flows.closing_subscription_balance,
        daily_flows.closing_purchased_balance,
        daily_flows.closing_balance,
        daily_flows.replay_sequence
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
    ledger_rows,
    replay_sequence
from daily_balances
