{%- set inactive_days = var('churn_inactive_days') -%}
{%- set declining_ratio = var('churn_declining_ratio') -%}
{%- set ending_days = var('churn_subscription_ending_days') -%}
{#- in whole minutes: the pipeline passes CREDITS_SOURCE_STALE_AFTER_HOURS, maybe fractional, and
    BigQuery's intervals take integers only -#}
{%- set stale_after_minutes = (var('source_stale_after_hours') * 60) | round | int -%}

with

extraction_cutoff as (

    select cutoff_at from {{ source('raw', 'extraction_cutoff') }}

),

source_freshness as (

    -- the newest ledger row up to the cut-off: how current the source the trends read is
    select
        max(replayed_rows.created_at) as source_fresh_as_of
    from {{ ref('int_credit_replay') }} as replayed_rows
    cross join extraction_cutoff
    where replayed_rows.created_at <= extraction_cutoff.cutoff_at

),

freshness as (

    select
        source_freshness.source_fresh_as_of,
        coalesce(
            source_freshness.source_fresh_as_of
                < {{ shift_timestamp('minute', -stale_after_minutes, 'extraction_cutoff.cutoff_at') }},
            true
        ) as source_is_stale
    from source_freshness
    cross join extraction_cutoff

),

users as (

    select
        id as user_id,
        plan_id,
        monthly_credit_amount,
        subscription_ends_at,
        created_at as signed_up_at
    from {{ source('raw', 'users') }}

),

plan_prices as (

    select plan_id, plan_tier, billing_interval from {{ ref('int_plan_prices') }}

),

replayed_rows as (

    select user_id, effect, amount, created_at from {{ ref('int_credit_replay') }}

),

latest_balances as (

    select user_id, closing_balance as current_balance
    from (
        select
            user_id,
            closing_balance,
            row_number() over (partition by user_id order by balance_date desc) as recency
        from {{ ref('user_credit_daily') }}
    ) as ranked_days
    where recency = 1

),

recent_activity as (

    select
        replayed_rows.user_id,
        {%- for days in [7, 30] %}
        cast(sum(case
            when replayed_rows.effect = 'spend'
                and replayed_rows.created_at
                    > {{ shift_timestamp('day', -days, 'extraction_cutoff.cutoff_at') }}
                and replayed_rows.created_at <= extraction_cutoff.cutoff_at
                then replayed_rows.amount
            else 0
        end) as {{ dbt.type_bigint() }}) as credits_spent_last_{{ days }}_days,
        {%- endfor %}
        max(case
            when replayed_rows.created_at <= extraction_cutoff.cutoff_at
                then replayed_rows.created_at
        end) as last_activity_at
    from replayed_rows
    cross join extraction_cutoff
    group by replayed_rows.user_id

),

user_trends as (

    select
        users.user_id,
        users.plan_id,
        plan_prices.plan_tier,
        plan_prices.billing_interval,
        users.monthly_credit_amount,
        coalesce(latest_balances.current_balance, 0) as current_balance,
        coalesce(recent_activity.credits_spent_last_7_days, 0) as credits_spent_last_7_days,
        coalesce(recent_activity.credits_spent_last_30_days, 0) as credits_spent_last_30_days,
        cast(coalesce(recent_activity.credits_spent_last_7_days, 0) as {{ type_double() }}) / 7
            as daily_burn_7_days,
        cast(coalesce(recent_activity.credits_spent_last_30_days, 0) as {{ type_double() }}) / 30
            as daily_burn_30_days,
        recent_activity.last_activity_at,
        {{ dbt.datediff('recent_activity.last_activity_at', 'extraction_cutoff.cutoff_at', 'day') }}
            as days_since_last_activity,
        users.signed_up_at,
        users.subscription_ends_at,
        extraction_cutoff.cutoff_at,
        freshness.source_fresh_as_of,
        freshness.source_is_stale
    from users
    cross join extraction_cutoff
    cross join freshness
    left join plan_prices
        on users.plan_id = plan_prices.plan_id
    left join latest_balances
        on users.user_id = latest_balances.user_id
    left join recent_activity
        on users.user_id = recent_activity.user_id

),

user_trends_with_risk as (

    select
        user_id,
        plan_id,
        plan_tier,
        billing_interval,
        monthly_credit_amount,
        current_balance,
        credits_spent_last_7_days,
        credits_spent_last_30_days,
        daily_burn_7_days,
        daily_burn_30_days,
        last_activity_at,
        days_since_last_activity,
        cutoff_at,
        source_fresh_as_of,
        source_is_stale,
        case
            when credits_spent_last_30_days = 0 or current_balance <= 0 then null
            else cast(floor(current_balance / daily_burn_30_days) as {{ dbt.type_bigint() }})
        end as days_until_depletion,
        {{ safe_divide('credits_spent_last_30_days', 'monthly_credit_amount') }}
            as monthly_allocation_used_share,
        case
            -- on a stale source, silence is the source's, not the user's: never `inactive` nor
            -- `declining_usage`
            when not source_is_stale
                and (last_activity_at is null or days_since_last_activity > {{ inactive_days }})
                and (
                    signed_up_at is null
                    or signed_up_at <= {{ shift_timestamp('day', -inactive_days, 'cutoff_at') }}
                )
                then 'inactive'
            when not source_is_stale
                and credits_spent_last_30_days > 0
                and daily_burn_7_days < {{ declining_ratio }} * daily_burn_30_days
                then 'declining_usage'
            when subscription_ends_at > cutoff_at
                and subscription_ends_at <= {{ shift_timestamp('day', ending_days, 'cutoff_at') }}
                then 'subscription_ending'
        end as churn_risk_reason
    from user_trends

)

select
    user_id,
    plan_id,
    plan_tier,
    billing_interval,
    monthly_credit_amount,
    current_balance,
    credits_spent_last_7_days,
    credits_spent_last_30_days,
    daily_burn_7_days,
    daily_burn_30_days,
    days_until_depletion,
    monthly_allocation_used_share,
    last_activity_at,
    days_since_last_activity,
    churn_risk_reason is not null as churn_risk,
    churn_risk_reason,
    cutoff_at as measured_at,
    source_fresh_as_of,
    source_is_stale
from user_trends_with_risk
