{#-
    The plan each ledger row was made under, point in time: the user's latest subscription
    started by the row's time (a plan change ends one subscription and starts the next, so
    raw.subscriptions is the plan history); rows before any subscription take the user's first.
    One truth for every mart that attributes usage to plans.
-#}
with

replayed_rows as (

    select
        credit_history_id,
        user_id,
        coalesce(created_at, cast(balance_date as {{ dbt.type_timestamp() }})) as row_time
    from {{ ref('int_credit_replay') }}

),

plan_prices as (

    -- int_plan_prices' tiers and monthly prices, with the credits a month of the plan carries
    select
        plan_prices.stripe_price_id,
        plan_prices.plan_tier,
        plan_prices.billing_interval,
        plan_prices.monthly_price,
        case
            when plan_prices.billing_interval = 'month'
                then cast({{ json_text('plans.meta', '$.full_credits') }} as {{ type_double() }})
            when plan_prices.billing_interval = 'year'
                then cast({{ json_text('plans.meta', '$.full_credits') }} as {{ type_double() }})
                    / 12
        end as monthly_credits
    from {{ ref('int_plan_prices') }} as plan_prices
    inner join {{ source('raw', 'plans') }} as plans
        on plan_prices.plan_id = plans.id

),

subscription_plans as (

    select
        subscriptions.id as subscription_id,
        subscriptions.user_id,
        subscriptions.created_at as held_from,
        subscriptions.stripe_price,
        plan_prices.plan_tier,
        plan_prices.billing_interval,
        plan_prices.monthly_price,
        plan_prices.monthly_credits
    from {{ source('raw', 'subscriptions') }} as subscriptions
    left join plan_prices
        on subscriptions.stripe_price = plan_prices.stripe_price_id
    where subscriptions.created_at is not null

),

subscription_spans as (

    -- the row times each subscription is the plan for: from its start to the next one's start;
    -- the user's first subscription also covers every time before it. Of subscriptions started
    -- at the same time the one with the highest id counts (the others' spans are empty). One
    -- match per row by a range join, not a ranking of every subscription for every row: that
    -- sorted the whole ledger (9.4 s at 100,000 users, 4.1 s this way, bench/end_to_end.py).
    select
        subscription_id,
        user_id,
        stripe_price,
        plan_tier,
        billing_interval,
        monthly_price,
        monthly_credits,
        case
            when row_number() over (
                partition by user_id order by held_from, subscription_id desc
            ) > 1
                then held_from
        end as span_from,
        lead(held_from) over (partition by user_id order by held_from, subscription_id)
            as span_to
    from subscription_plans

),

row_subscriptions as (

    select
        replayed_rows.credit_history_id,
        replayed_rows.user_id,
        subscription_spans.subscription_id,
        subscription_spans.stripe_price,
        subscription_spans.plan_tier,
        subscription_spans.billing_interval,
        subscription_spans.monthly_price,
        subscription_spans.monthly_credits
    from replayed_rows
    inner join subscription_spans
        on replayed_rows.user_id = subscription_spans.user_id
        and (
            subscription_spans.span_from is null
            or subscription_spans.span_from <= replayed_rows.row_time
        )
        and (
            subscription_spans.span_to is null
            or replayed_rows.row_time < subscription_spans.span_to
        )

)

select
    credit_history_id,
    user_id,
    subscription_id,
    stripe_price,
    coalesce(plan_tier, 'none') as plan_tier,
    billing_interval,
    monthly_price,
    monthly_credits,
    {{ safe_divide('monthly_price', 'monthly_credits') }} as price_per_credit
from row_subscriptions
