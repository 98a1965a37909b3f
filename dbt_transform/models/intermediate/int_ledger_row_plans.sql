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

ranked_subscriptions as (

    -- the latest subscription started by the row's time first; else the earliest one
    select
        replayed_rows.credit_history_id,
        replayed_rows.user_id,
        subscription_plans.subscription_id,
        subscription_plans.stripe_price,
        subscription_plans.plan_tier,
        subscription_plans.billing_interval,
        subscription_plans.monthly_price,
        subscription_plans.monthly_credits,
        row_number() over (
            partition by replayed_rows.credit_history_id
            order by
                case when subscription_plans.held_from <= replayed_rows.row_time then 0 else 1 end,
                case
                    when subscription_plans.held_from <= replayed_rows.row_time
                        then subscription_plans.held_from
                end desc,
                subscription_plans.held_from,
                subscription_plans.subscription_id desc
        ) as preference
    from replayed_rows
    inner join subscription_plans
        on replayed_rows.user_id = subscription_plans.user_id

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
from ranked_subscriptions
where preference = 1
